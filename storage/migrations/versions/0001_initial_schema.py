"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 18:44:10.850252
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('annotator',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('annotator', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_annotator_username'), ['username'], unique=True)

    op.create_table('job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('params_json', sa.Text(), nullable=False),
    sa.Column('metrics_json', sa.Text(), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker_id', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_status'), ['status'], unique=False)

    op.create_table('policyversion',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('adapter_path', sa.String(), nullable=True),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('metrics_json', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['policyversion.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('prompt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('messages_json', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('split', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('prompt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prompt_content_hash'), ['content_hash'], unique=True)
        batch_op.create_index(batch_op.f('ix_prompt_split'), ['split'], unique=False)

    op.create_table('rewardmodelversion',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('adapter_path', sa.String(), nullable=False),
    sa.Column('trained_on', sa.Integer(), nullable=False),
    sa.Column('heldout_accuracy', sa.Float(), nullable=True),
    sa.Column('heldout_loss', sa.Float(), nullable=True),
    sa.Column('metrics_json', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('sample',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('policy_version_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('token_count', sa.Integer(), nullable=False),
    sa.Column('gen_params_json', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['policy_version_id'], ['policyversion.id'], ),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompt.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sample', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sample_policy_version_id'), ['policy_version_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sample_prompt_id'), ['prompt_id'], unique=False)

    op.create_table('traininglog',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('metrics_json', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('traininglog', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_traininglog_job_id'), ['job_id'], unique=False)

    op.create_table('pair',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('sample_a_id', sa.Integer(), nullable=False),
    sa.Column('sample_b_id', sa.Integer(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('judgments_wanted', sa.Integer(), nullable=False),
    sa.Column('n_judgments', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompt.id'], ),
    sa.ForeignKeyConstraint(['sample_a_id'], ['sample.id'], ),
    sa.ForeignKeyConstraint(['sample_b_id'], ['sample.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('pair', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pair_n_judgments'), ['n_judgments'], unique=False)
        batch_op.create_index(batch_op.f('ix_pair_priority'), ['priority'], unique=False)
        batch_op.create_index(batch_op.f('ix_pair_prompt_id'), ['prompt_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pair_round'), ['round'], unique=False)

    op.create_table('judgment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pair_id', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('choice', sa.String(length=8), nullable=False),
    sa.Column('strength', sa.String(length=8), nullable=True),
    sa.Column('rationale', sa.Text(), nullable=True),
    sa.Column('left_side', sa.String(length=1), nullable=False),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotator.id'], ),
    sa.ForeignKeyConstraint(['pair_id'], ['pair.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('pair_id', 'annotator_id', name='uq_judgment_pair_annotator')
    )
    with op.batch_alter_table('judgment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_judgment_annotator_id'), ['annotator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_judgment_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_judgment_pair_id'), ['pair_id'], unique=False)

    op.create_table('lease',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pair_id', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('left_side', sa.String(length=1), nullable=False),
    sa.Column('served_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotator.id'], ),
    sa.ForeignKeyConstraint(['pair_id'], ['pair.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('pair_id', 'annotator_id', name='uq_lease_pair_annotator')
    )
    with op.batch_alter_table('lease', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lease_annotator_id'), ['annotator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lease_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_lease_pair_id'), ['pair_id'], unique=False)

    op.create_table('skip',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pair_id', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotator.id'], ),
    sa.ForeignKeyConstraint(['pair_id'], ['pair.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('pair_id', 'annotator_id', name='uq_skip_pair_annotator')
    )
    with op.batch_alter_table('skip', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_skip_annotator_id'), ['annotator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_skip_pair_id'), ['pair_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('skip', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_skip_pair_id'))
        batch_op.drop_index(batch_op.f('ix_skip_annotator_id'))

    op.drop_table('skip')
    with op.batch_alter_table('lease', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lease_pair_id'))
        batch_op.drop_index(batch_op.f('ix_lease_expires_at'))
        batch_op.drop_index(batch_op.f('ix_lease_annotator_id'))

    op.drop_table('lease')
    with op.batch_alter_table('judgment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_judgment_pair_id'))
        batch_op.drop_index(batch_op.f('ix_judgment_created_at'))
        batch_op.drop_index(batch_op.f('ix_judgment_annotator_id'))

    op.drop_table('judgment')
    with op.batch_alter_table('pair', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pair_round'))
        batch_op.drop_index(batch_op.f('ix_pair_prompt_id'))
        batch_op.drop_index(batch_op.f('ix_pair_priority'))
        batch_op.drop_index(batch_op.f('ix_pair_n_judgments'))

    op.drop_table('pair')
    with op.batch_alter_table('traininglog', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_traininglog_job_id'))

    op.drop_table('traininglog')
    with op.batch_alter_table('sample', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sample_prompt_id'))
        batch_op.drop_index(batch_op.f('ix_sample_policy_version_id'))

    op.drop_table('sample')
    op.drop_table('rewardmodelversion')
    with op.batch_alter_table('prompt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prompt_split'))
        batch_op.drop_index(batch_op.f('ix_prompt_content_hash'))

    op.drop_table('prompt')
    op.drop_table('policyversion')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_status'))

    op.drop_table('job')
    with op.batch_alter_table('annotator', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_annotator_username'))

    op.drop_table('annotator')
