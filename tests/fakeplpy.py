"""A small stand-in for PL/Python's ``plpy`` (in the spirit of MADlib's ``plpy_mock``), so the
package's validation and logic are tested without a server, in seconds.

Queries are answered by responders registered with :meth:`FakePlpy.on` (a regular expression
searched in the SQL, and rows or a function of the arguments); a query nobody answers fails
the test, so a test also proves which queries a function runs, and that bad input is refused
before any.
"""

import contextlib
import re


class SPIError(Exception):
    """What plpy raises when a query fails."""


class PlpyError(Exception):
    """What ``plpy.error`` raises: the message, with the SQLSTATE and hint it was given."""

    def __init__(self, message, sqlstate=None, hint=None):
        super().__init__(message)
        self.sqlstate, self.hint = sqlstate, hint


class Plan:
    def __init__(self, query, types):
        self.query, self.types = query, list(types)


class Cursor:
    def __init__(self, rows):
        self.rows = list(rows)

    def fetch(self, n):
        batch, self.rows = self.rows[:n], self.rows[n:]
        return batch


class FakePlpy:
    SPIError = SPIError

    def __init__(self):
        self.responders = []
        self.queries = []      # (sql, args) in the order run
        self.prepared = []     # every plpy.prepare call's SQL
        self.notices = []
        self.warnings = []

    def on(self, pattern, rows):
        """Answer queries matching ``pattern`` with ``rows`` (a list of dicts, or a function
        of the query's arguments returning one)."""
        self.responders.append((re.compile(pattern, re.S), rows))
        return self

    def prepare(self, query, types=()):
        self.prepared.append(query)
        return Plan(query, types)

    def execute(self, plan, args=None, limit=None):
        query = plan.query if isinstance(plan, Plan) else plan
        self.queries.append((query, args))
        for pattern, rows in reversed(self.responders):
            if pattern.search(query):
                return [dict(r) for r in (rows(args) if callable(rows) else rows)]
        raise AssertionError(f"unexpected query: {' '.join(query.split())[:200]}")

    def cursor(self, plan, args=None):
        return Cursor(self.execute(plan, args))

    def notice(self, message):
        self.notices.append(message)

    def warning(self, message):
        self.warnings.append(message)

    def error(self, message, sqlstate=None, hint=None):
        raise PlpyError(message, sqlstate, hint)

    def commit(self):
        pass

    def subtransaction(self):
        return contextlib.nullcontext()

    @staticmethod
    def quote_ident(name):
        return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else \
            '"' + name.replace('"', '""') + '"'

    @staticmethod
    def quote_literal(value):
        return "'" + str(value).replace("'", "''") + "'"
