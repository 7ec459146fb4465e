"""forecasts, backtests, length models, mispredictions

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24 15:34:08.709868
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('forecast_backtests',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('class_name', sa.String(length=8), nullable=False),
    sa.Column('forecaster', sa.String(length=64), nullable=False),
    sa.Column('horizon', sa.String(length=16), nullable=False),
    sa.Column('test_days', sa.Integer(), nullable=False),
    sa.Column('windows', sa.BigInteger(), nullable=False),
    sa.Column('mape_pct', sa.Float(), nullable=False),
    sa.Column('smape_pct', sa.Float(), nullable=False),
    sa.Column('pinball_pct', sa.Float(), nullable=False),
    sa.Column('coverage', sa.Float(), nullable=False),
    sa.Column('upper_quantile', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_forecast_backtests'))
    )
    op.create_table('forecast_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('horizon', sa.String(length=16), nullable=False),
    sa.Column('origin_s', sa.BigInteger(), nullable=False),
    sa.Column('window_s', sa.Integer(), nullable=False),
    sa.Column('forecaster', sa.String(length=64), nullable=False),
    sa.Column('upper_quantile', sa.Float(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_forecast_runs'))
    )
    with op.batch_alter_table('forecast_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_forecast_runs_origin_s'), ['origin_s'], unique=False)

    op.create_table('forecasts',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('class_name', sa.String(length=8), nullable=False),
    sa.Column('window_start_s', sa.BigInteger(), nullable=False),
    sa.Column('rate_rps', sa.Float(), nullable=False),
    sa.Column('upper_rps', sa.Float(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('train_start_s', sa.BigInteger(), nullable=False),
    sa.Column('train_end_s', sa.BigInteger(), nullable=False),
    sa.Column('calibrated', sa.Boolean(), nullable=False),
    sa.Column('fallback', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'model', 'class_name', 'window_start_s', name=op.f('pk_forecasts'))
    )
    op.create_table('length_models',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('train_rows', sa.BigInteger(), nullable=False),
    sa.Column('output_bins_tokens', sa.String(length=32), nullable=False),
    sa.Column('accuracy', sa.Float(), nullable=True),
    sa.Column('metadata_json', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_length_models'))
    )
    op.create_table('mispredictions',
    sa.Column('length_model_version', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('window_s', sa.Integer(), nullable=False),
    sa.Column('window_start_s', sa.BigInteger(), nullable=False),
    sa.Column('true_class', sa.String(length=8), nullable=False),
    sa.Column('predicted_class', sa.String(length=8), nullable=False),
    sa.Column('requests', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens_true_sum', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens_predicted_sum', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('length_model_version', 'model', 'window_s', 'window_start_s', 'true_class', 'predicted_class', name=op.f('pk_mispredictions'))
    )


def downgrade() -> None:
    op.drop_table('mispredictions')
    op.drop_table('length_models')
    op.drop_table('forecasts')
    with op.batch_alter_table('forecast_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_forecast_runs_origin_s'))

    op.drop_table('forecast_runs')
    op.drop_table('forecast_backtests')
