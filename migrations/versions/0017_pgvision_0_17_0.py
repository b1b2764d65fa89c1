"""pgvision 0.17.0: features stored in half precision (vision.stored_features under the view
vision.features, vision.compact_features, vision.feature_storage).

Revision ID: 0017
Revises: 0016
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

VERSION = "0.17.0"
PREVIOUS = "0.16.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
