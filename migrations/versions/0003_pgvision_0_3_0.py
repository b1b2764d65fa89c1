"""pgvision 0.3.0: classification (train_classifier, classify, classify_table, compare).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VERSION = "0.3.0"
PREVIOUS = "0.2.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
