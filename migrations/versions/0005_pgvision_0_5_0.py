"""pgvision 0.5.0: scale-out (parallel extraction, model-backend cap, shard functions).

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

VERSION = "0.5.0"
PREVIOUS = "0.4.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
