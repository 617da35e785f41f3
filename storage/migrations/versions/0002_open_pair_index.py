"""partial index for serving open pairs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OPEN = sa.text("n_judgments < judgments_wanted")


def upgrade() -> None:
    # next_pair_for scans open pairs by (priority desc, id); most pairs are closed once judged.
    op.create_index("ix_pair_open_priority", "pair", ["priority", "id"], unique=False,
                    sqlite_where=OPEN, postgresql_where=OPEN)


def downgrade() -> None:
    op.drop_index("ix_pair_open_priority", table_name="pair")
