"""pgvision 0.6.0: classification and recommendation scoring on every shard.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

VERSION = "0.6.0"
PREVIOUS = "0.5.0"

# A coordinator also has pgvision_cluster, which shares pgvision's version.
_CLUSTER = """DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pgvision_cluster') THEN
    ALTER EXTENSION pgvision_cluster UPDATE TO '{version}';
  END IF;
END $$"""


def upgrade():
    op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{VERSION}'")
    op.execute(_CLUSTER.format(version=VERSION))


def downgrade():
    # sql/pgvision--0.6.0--0.5.0.sql (and pgvision_cluster--0.6.0--0.5.0.sql) drop what
    # 0.6.0 added
    op.execute(_CLUSTER.format(version=PREVIOUS))
    op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{PREVIOUS}'")
