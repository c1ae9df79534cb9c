"""library, announcement and per-reader columns: papers doi, code_url, journal_ref, version; subscribers categories; paper_lookups

Existing rows get the empty value of each new column (server defaults), so a database with papers and
readers upgrades in place.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 00:04:27.630071
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('paper_lookups',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('found', sa.Boolean(), nullable=False),
    sa.Column('reported', sa.Boolean(), nullable=False),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tried_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('paper_lookups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_paper_lookups_tried_at'), ['tried_at'], unique=False)

    with op.batch_alter_table('papers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('doi', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('code_url', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('journal_ref', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('version', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_papers_doi'), ['doi'], unique=False)

    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('categories', sa.JSON(), nullable=False, server_default='[]'))



def downgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.drop_column('categories')

    with op.batch_alter_table('papers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_papers_doi'))
        batch_op.drop_column('version')
        batch_op.drop_column('journal_ref')
        batch_op.drop_column('code_url')
        batch_op.drop_column('doi')

    with op.batch_alter_table('paper_lookups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_paper_lookups_tried_at'))

    op.drop_table('paper_lookups')
