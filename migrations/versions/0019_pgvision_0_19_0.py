"""pgvision 0.19.0: a new default model, inception_v3_mixed6_grid_224 (the 0.14.0 default's
cut fed 224 px images: as good in make bench-quality, 1.6-2x as fast), beside
inception_v3_mixed6_grid, whose features do not change.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

VERSION = "0.19.0"
PREVIOUS = "0.18.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
