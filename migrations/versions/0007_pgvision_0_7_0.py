"""pgvision 0.7.0: one Python module per concept; every wrapper goes through pgvision.spi.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

VERSION = "0.7.0"
PREVIOUS = "0.6.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    # sql/pgvision--0.7.0--0.6.0.sql (and the cluster's) restore the 0.6.0 wrappers
    downgrade_to(op, PREVIOUS)
