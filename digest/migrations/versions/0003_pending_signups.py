"""pending sign-ups: a web sign-up waits here for its confirmation link and changes no reader before it

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:32:16.502736
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pending_signups',
    sa.Column('nonce', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.Column('liked', sa.JSON(), nullable=False),
    sa.Column('new_reader', sa.Boolean(), nullable=False),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('nonce')
    )
    with op.batch_alter_table('pending_signups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_signups_created'), ['created'], unique=False)
        batch_op.create_index(batch_op.f('ix_pending_signups_email'), ['email'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pending_signups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_signups_email'))
        batch_op.drop_index(batch_op.f('ix_pending_signups_created'))

    op.drop_table('pending_signups')
