"""serve the newest round's open pairs first

Revision ID: 0007_serve_newest
Revises: 0006_accounts
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_serve_newest"
down_revision = "0006_accounts"
branch_labels = None
depends_on = None

OPEN = sa.text("n_judgments < judgments_wanted")


def upgrade() -> None:
    # next_pair_for orders open pairs by (priority desc, round desc, info_score desc, id): the index follows,
    # so the first open pair is still read off the index without sorting.
    op.drop_index("ix_pair_open_priority", table_name="pair")
    op.create_index("ix_pair_open_priority", "pair",
                    [sa.text("priority DESC"), sa.text("round DESC"), sa.text("info_score DESC"), "id"],
                    unique=False, sqlite_where=OPEN, postgresql_where=OPEN)


def downgrade() -> None:
    op.drop_index("ix_pair_open_priority", table_name="pair")
    op.create_index("ix_pair_open_priority", "pair", [sa.text("priority DESC"), sa.text("info_score DESC"), "id"],
                    unique=False, sqlite_where=OPEN, postgresql_where=OPEN)
