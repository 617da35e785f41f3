"""pair selection and info score; control pairs

Revision ID: 0004_quality
Revises: 0003_sessions
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_quality"
down_revision = "0003_sessions"
branch_labels = None
depends_on = None

OPEN = sa.text("n_judgments < judgments_wanted")


def upgrade() -> None:
    with op.batch_alter_table("pair", schema=None) as batch_op:
        batch_op.add_column(sa.Column("selection", sa.String(length=16), nullable=False, server_default="all"))
        batch_op.add_column(sa.Column("info_score", sa.Float(), nullable=False, server_default="0"))
    # next_pair_for now orders open pairs by (priority desc, info_score desc, id): the index follows,
    # column by column, so the first open pair is read off the index without sorting.
    op.drop_index("ix_pair_open_priority", table_name="pair")
    op.create_index("ix_pair_open_priority", "pair", [sa.text("priority DESC"), sa.text("info_score DESC"), "id"],
                    unique=False, sqlite_where=OPEN, postgresql_where=OPEN)
    op.create_table(
        "controlpair",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("expected", sa.String(length=8), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("imported_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["pair_id"], ["pair.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pair_id"),
    )
    op.create_index(op.f("ix_controlpair_content_hash"), "controlpair", ["content_hash"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_controlpair_content_hash"), table_name="controlpair")
    op.drop_table("controlpair")
    op.drop_index("ix_pair_open_priority", table_name="pair")
    op.create_index("ix_pair_open_priority", "pair", [sa.text("priority DESC"), "id"], unique=False,
                    sqlite_where=OPEN, postgresql_where=OPEN)
    with op.batch_alter_table("pair", schema=None) as batch_op:
        batch_op.drop_column("info_score")
        batch_op.drop_column("selection")
