"""step labels (labeling mode "steps") and process reward model versions

Revision ID: 0012_step_labels
Revises: 0011_prompt_columns
Create Date: 2026-12-10
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_step_labels"
down_revision = "0011_prompt_columns"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "step_label",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("steps_json", sa.Text(), nullable=True),
        sa.Column("labels_json", sa.Text(), nullable=True),
        sa.Column("first_wrong", sa.Integer(), nullable=True),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["sample_id"], ["sample.id"]),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotator.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sample_id", "annotator_id", name="uq_step_label_sample_annotator"),
    )
    op.create_index(op.f("ix_step_label_sample_id"), "step_label", ["sample_id"], unique=False)
    op.create_index(op.f("ix_step_label_annotator_id"), "step_label", ["annotator_id"], unique=False)
    op.create_index(op.f("ix_step_label_status"), "step_label", ["status"], unique=False)
    op.create_index(op.f("ix_step_label_labeled_at"), "step_label", ["labeled_at"], unique=False)
    op.create_table(
        "prm_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_path", sa.String(), nullable=False),
        sa.Column("trained_on", sa.Integer(), nullable=False),
        sa.Column("heldout_step_accuracy", sa.Float(), nullable=True),
        sa.Column("metrics_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("prm_version")
    op.drop_index(op.f("ix_step_label_labeled_at"), table_name="step_label")
    op.drop_index(op.f("ix_step_label_status"), table_name="step_label")
    op.drop_index(op.f("ix_step_label_annotator_id"), table_name="step_label")
    op.drop_index(op.f("ix_step_label_sample_id"), table_name="step_label")
    op.drop_table("step_label")
