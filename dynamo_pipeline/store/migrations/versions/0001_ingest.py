"""request log, quarantine, ingest runs, window loads

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 14:29:50.724291
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ingest_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('reader', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rows_read', sa.BigInteger(), nullable=False),
    sa.Column('rows_inserted', sa.BigInteger(), nullable=False),
    sa.Column('rows_already_present', sa.BigInteger(), nullable=False),
    sa.Column('rows_quarantined', sa.BigInteger(), nullable=False),
    sa.Column('first_arrival_us', sa.BigInteger(), nullable=True),
    sa.Column('last_arrival_us', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_runs'))
    )
    with op.batch_alter_table('ingest_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ingest_runs_file_sha256'), ['file_sha256'], unique=False)

    op.create_table('quarantine',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ingest_run_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('line', sa.BigInteger(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quarantine')),
    sa.UniqueConstraint('file_sha256', 'line', name=op.f('uq_quarantine_file_sha256_line'))
    )
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quarantine_ingest_run_id'), ['ingest_run_id'], unique=False)

    op.create_table('requests',
    sa.Column('arrived_at_us', sa.BigInteger(), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('input_tokens', sa.Integer(), nullable=False),
    sa.Column('output_tokens', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=True),
    sa.Column('prompt_text', sa.Text(), nullable=True),
    sa.Column('ingest_run_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('arrived_at_us', 'request_id', name=op.f('pk_requests'))
    )

    op.create_table('window_loads',
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('class_name', sa.String(length=8), nullable=False),
    sa.Column('window_s', sa.Integer(), nullable=False),
    sa.Column('window_start_s', sa.BigInteger(), nullable=False),
    sa.Column('arrivals', sa.BigInteger(), nullable=False),
    sa.Column('rate_rps', sa.Float(), nullable=False),
    sa.Column('input_tokens_sum', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens_sum', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('model', 'class_name', 'window_s', 'window_start_s', name=op.f('pk_window_loads'))
    )


def downgrade() -> None:
    op.drop_table('window_loads')
    op.drop_table('requests')
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quarantine_ingest_run_id'))

    op.drop_table('quarantine')
    with op.batch_alter_table('ingest_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ingest_runs_file_sha256'))

    op.drop_table('ingest_runs')
