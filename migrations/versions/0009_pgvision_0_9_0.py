"""pgvision 0.9.0: vision.fine_tune; model registration in a child process.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

VERSION = "0.9.0"
PREVIOUS = "0.8.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
