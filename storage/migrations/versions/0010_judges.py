"""AI judges: accounts of kind "ai", their kind and settings, judgments' confidence and hint flag

Revision ID: 0010_judges
Revises: 0009_current_policy
Create Date: 2026-12-08
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_judges"
down_revision = "0009_current_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("annotator", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=8), nullable=False, server_default="human"))
    with op.batch_alter_table("judgment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("hint_shown", sa.Boolean(), nullable=False, server_default=sa.text("false")))
    op.create_table(
        "judge",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("settings_json", sa.Text(), nullable=False),
        sa.Column("rubric", sa.Text(), nullable=True),
        sa.Column("stats_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotator.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("annotator_id"),
    )


def downgrade() -> None:
    op.drop_table("judge")
    with op.batch_alter_table("judgment", schema=None) as batch_op:
        batch_op.drop_column("hint_shown")
        batch_op.drop_column("confidence")
    with op.batch_alter_table("annotator", schema=None) as batch_op:
        batch_op.drop_column("kind")
