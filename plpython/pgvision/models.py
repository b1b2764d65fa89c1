"""The one name the install scripts of pgvision 0.1.0-0.6.0 call while they run.

``sql/pgvision--0.1.0.sql`` (the start of every upgrade path, and Alembic's first revision)
registers the installed models with ``models.register_builtin_models``; the 0.7.0 upgrade
replaces every wrapper with one that calls the module holding its function, so nothing else
of the old single-module layout is needed.
"""

from .registry import register_builtin_models  # noqa: F401
