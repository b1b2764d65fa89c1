"""pgvision 0.14.0: a new default model (inception_v3_mixed6_grid, chosen by make
bench-quality) beside inception_v3, grid and GeM pooling, vision.evaluate_features, and
vision.maintain(add_model => ...) to move a table to it.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

VERSION = "0.14.0"
PREVIOUS = "0.13.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
