"""node agent acks and telemetry events

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 15:31:50.517848
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_acks',
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('at_us', sa.BigInteger(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('node', 'version', name=op.f('pk_agent_acks'))
    )
    with op.batch_alter_table('agent_acks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_acks_at_us'), ['at_us'], unique=False)

    op.create_table('agent_events',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('at_us', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('instance_id', sa.String(length=128), nullable=True),
    sa.Column('clock_mhz', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('window_s', sa.Float(), nullable=True),
    sa.Column('power_w', sa.Float(), nullable=True),
    sa.Column('energy_j', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_agent_events'))
    )
    with op.batch_alter_table('agent_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_events_at_us'), ['at_us'], unique=False)
        batch_op.create_index(batch_op.f('ix_agent_events_node'), ['node'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('agent_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_events_node'))
        batch_op.drop_index(batch_op.f('ix_agent_events_at_us'))

    op.drop_table('agent_events')
    with op.batch_alter_table('agent_acks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_acks_at_us'))

    op.drop_table('agent_acks')
