"""What each revision does to the extensions: pgvision, and pgvision_cluster where a
coordinator has it (it shares pgvision's version and moves with it)."""

_CLUSTER = """DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pgvision_cluster') THEN
    ALTER EXTENSION pgvision_cluster UPDATE TO '{version}';
  END IF;
END $$"""


def upgrade_to(op, version):
    op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{version}'")
    op.execute(_CLUSTER.format(version=version))


def downgrade_to(op, version):
    op.execute(_CLUSTER.format(version=version))
    op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{version}'")
