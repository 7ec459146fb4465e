"""energy-performance profiles (one row per run, gpu, model, class, tp, clock, load)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 15:25:10.187893
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('profiles',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('profile_version', sa.String(length=64), nullable=False),
    sa.Column('gpu', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('class_name', sa.String(length=8), nullable=False),
    sa.Column('tp', sa.Integer(), nullable=False),
    sa.Column('freq_mhz', sa.Integer(), nullable=False),
    sa.Column('load_rps', sa.Float(), nullable=False),
    sa.Column('throughput_rps', sa.Float(), nullable=False),
    sa.Column('ttft_p50_s', sa.Float(), nullable=False),
    sa.Column('ttft_p99_s', sa.Float(), nullable=False),
    sa.Column('tbt_p50_s', sa.Float(), nullable=True),
    sa.Column('tbt_p99_s', sa.Float(), nullable=True),
    sa.Column('power_w', sa.Float(), nullable=False),
    sa.Column('energy_per_request_j', sa.Float(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=False),
    sa.Column('versions', sa.Text(), nullable=False),
    sa.Column('profiled_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_profiles')),
    sa.UniqueConstraint('profile_version', 'gpu', 'model', 'class_name', 'tp', 'freq_mhz', 'load_rps', name='uq_profiles_point')
    )
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_profiles_profile_version'), ['profile_version'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_profiles_profile_version'))

    op.drop_table('profiles')
