"""jobs that recover on their own: attempts, a bound on them, and when a re-queued job may start again

Revision ID: 0013_job_recovery
Revises: 0012_step_labels
Create Date: 2026-12-10
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_job_recovery"
down_revision = "0012_step_labels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
        batch_op.drop_column("max_attempts")
        batch_op.drop_column("attempts")
