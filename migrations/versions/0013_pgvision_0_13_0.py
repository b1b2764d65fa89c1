"""pgvision 0.13.0: the package split by concept (no change in behaviour).

Revision ID: 0013
Revises: 0012
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

VERSION = "0.13.0"
PREVIOUS = "0.12.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
