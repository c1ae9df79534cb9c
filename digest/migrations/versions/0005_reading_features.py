"""reading features: feeds, interests, followed authors, highlights, follow-ups; a sign-up's uploaded library

Existing rows get the empty value of each new column (server defaults): readers are mailed as
before (delivery "email"), with no named interests or followed authors; past digests have no
highlights, sections or notes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:36:08.774747
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('highlights', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('sections', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('notes', sa.JSON(), nullable=False, server_default='[]'))

    with op.batch_alter_table('papers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revised_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))

    with op.batch_alter_table('pending_signups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('library', sa.JSON(), nullable=False, server_default='[]'))

    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('topics', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('authors', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('delivery', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False, server_default='email'))
        batch_op.add_column(sa.Column('feed_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False, server_default=''))



def downgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.drop_column('feed_key')
        batch_op.drop_column('delivery')
        batch_op.drop_column('authors')
        batch_op.drop_column('topics')

    with op.batch_alter_table('pending_signups', schema=None) as batch_op:
        batch_op.drop_column('library')

    with op.batch_alter_table('papers', schema=None) as batch_op:
        batch_op.drop_column('revised_at')

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('notes')
        batch_op.drop_column('sections')
        batch_op.drop_column('highlights')

