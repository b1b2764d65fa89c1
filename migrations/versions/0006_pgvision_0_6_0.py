"""pgvision 0.6.0: classification and recommendation scoring on every shard.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

VERSION = "0.6.0"
PREVIOUS = "0.5.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
