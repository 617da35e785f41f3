"""login sessions in the database; the open-pair index in serving order

Revision ID: 0003_sessions
Revises: 0002
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0003_sessions"
down_revision = "0002"
branch_labels = None
depends_on = None


OPEN = sa.text("n_judgments < judgments_wanted")


def upgrade() -> None:
    # next_pair_for orders open pairs by (priority desc, id); an ascending (priority, id) index
    # made SQLite sort every open pair for each serve.
    op.drop_index("ix_pair_open_priority", table_name="pair")
    op.create_index("ix_pair_open_priority", "pair", [sa.text("priority DESC"), "id"], unique=False,
                    sqlite_where=OPEN, postgresql_where=OPEN)
    # Logins stored in the database, so any app process behind a load balancer accepts them.
    op.create_table(
        "login_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotator.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("login_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_session_token_hash"), ["token_hash"], unique=True)
        batch_op.create_index(batch_op.f("ix_login_session_annotator_id"), ["annotator_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_session_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_table("login_session")
    op.drop_index("ix_pair_open_priority", table_name="pair")
    op.create_index("ix_pair_open_priority", "pair", ["priority", "id"], unique=False,
                    sqlite_where=OPEN, postgresql_where=OPEN)
