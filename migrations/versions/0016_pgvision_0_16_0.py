"""pgvision 0.16.0: words in images (the pp_ocr_v6 model, vision.read_text, vision.image_text,
vision.search_text).

Revision ID: 0016
Revises: 0015
"""

from alembic import op

from extension import downgrade_to, upgrade_to

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

VERSION = "0.16.0"
PREVIOUS = "0.15.0"


def upgrade():
    upgrade_to(op, VERSION)


def downgrade():
    downgrade_to(op, PREVIOUS)
