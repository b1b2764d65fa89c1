"""pgvision 0.15.0: near-duplicates (the perceptual_hash model, vision.duplicates,
vision.duplicates_of).

Revision ID: 0015
Revises: 0014
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

VERSION = "0.15.0"
PREVIOUS = "0.14.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
