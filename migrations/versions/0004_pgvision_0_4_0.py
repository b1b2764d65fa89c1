"""pgvision 0.4.0: recommendations, clusters, bandit, 2-D maps.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VERSION = "0.4.0"
PREVIOUS = "0.3.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
