"""data from outside the loop: imported pairs and their systems, prior preferences, demonstrations;
why each sample ended

Revision ID: 0008_outside_data
Revises: 0007_serve_newest
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_outside_data"
down_revision = "0007_serve_newest"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An imported response has no policy version. On SQLite the batch rebuilds the table; Database.upgrade
    # runs migrations with foreign keys off for that (SQLite's own recipe) and checks them afterwards.
    with op.batch_alter_table("sample", schema=None) as batch_op:
        batch_op.alter_column("policy_version_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("system", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("finish_reason", sa.String(length=8), nullable=True))
    with op.batch_alter_table("pair", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=255), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("metadata_json", sa.Text(), nullable=True))
    op.create_table(
        "prior_preference",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("chosen", sa.Text(), nullable=False),
        sa.Column("rejected", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_prior_preference_prompt_id"), "prior_preference", ["prompt_id"], unique=False)
    op.create_index(op.f("ix_prior_preference_content_hash"), "prior_preference", ["content_hash"], unique=True)
    op.create_table(
        "demonstration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=True),
        sa.Column("edited_sample_id", sa.Integer(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"]),
        sa.ForeignKeyConstraint(["author_id"], ["annotator.id"]),
        sa.ForeignKeyConstraint(["pair_id"], ["pair.id"]),
        sa.ForeignKeyConstraint(["edited_sample_id"], ["sample.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_demonstration_prompt_id"), "demonstration", ["prompt_id"], unique=False)
    op.create_index(op.f("ix_demonstration_author_id"), "demonstration", ["author_id"], unique=False)
    op.create_index(op.f("ix_demonstration_content_hash"), "demonstration", ["content_hash"], unique=True)
    op.create_index(op.f("ix_demonstration_created_at"), "demonstration", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("demonstration")
    op.drop_table("prior_preference")
    with op.batch_alter_table("pair", schema=None) as batch_op:
        batch_op.drop_column("metadata_json")
        batch_op.drop_column("source")
    with op.batch_alter_table("sample", schema=None) as batch_op:
        batch_op.drop_column("finish_reason")
        batch_op.drop_column("system")
        batch_op.alter_column("policy_version_id", existing_type=sa.Integer(), nullable=False)
