"""pgvision 0.11.0: the source table's row-level security holds for what pgvision stores.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

VERSION = "0.11.0"
PREVIOUS = "0.10.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
