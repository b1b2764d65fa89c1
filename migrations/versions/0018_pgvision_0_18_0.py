"""pgvision 0.18.0: IVF lists beside HNSW graphs (vision.create_index method, lists, probes;
by default IVF from 500,000 images), and half-precision snapshots of indexed tables.

Revision ID: 0018
Revises: 0017
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

VERSION = "0.18.0"
PREVIOUS = "0.17.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
