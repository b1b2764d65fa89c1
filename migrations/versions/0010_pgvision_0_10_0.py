"""pgvision 0.10.0: vision.contact_sheet, vision.plot_map labels and legend, vision.environment.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

VERSION = "0.10.0"
PREVIOUS = "0.9.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
