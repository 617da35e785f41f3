"""the loop's own state: which policy version is current (promotion, rollback)

Revision ID: 0009_current_policy
Revises: 0008_outside_data
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_current_policy"
down_revision = "0008_outside_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loopstate",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("loopstate")
