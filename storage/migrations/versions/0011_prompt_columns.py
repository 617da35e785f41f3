"""prompt columns: the extra fields of a prompt file (answer, tests, ...), which reward functions read

Revision ID: 0011_prompt_columns
Revises: 0010_judges
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_prompt_columns"
down_revision = "0010_judges"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prompt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("columns_json", sa.Text(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("prompt", schema=None) as batch_op:
        batch_op.drop_column("columns_json")
