"""pgvision 0.8.0: search from shared, memory-mapped files; chunked indexes; index storage.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

VERSION = "0.8.0"
PREVIOUS = "0.7.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    # sql/pgvision--0.8.0--0.7.0.sql drops 0.8.0's indexes (0.7.0 cannot read them)
    downgrade_to(op, PREVIOUS)
