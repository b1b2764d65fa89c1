"""pgvision 0.12.0: plot_map lays thumbnails out in a grid (layout).

Revision ID: 0012
Revises: 0011
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

VERSION = "0.12.0"
PREVIOUS = "0.11.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
