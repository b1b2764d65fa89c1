"""pgvision 0.2.0: visual search (vision.similar, HNSW indexes, cached neighbours).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VERSION = "0.2.0"
PREVIOUS = "0.1.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
