"""Errors that name the SQL function, the argument and the bad value.

Every check runs before any work starts. The SQL wrappers call :func:`pgvision.spi.call`,
which turns a :class:`PgvisionError` into ``plpy.error`` with a SQLSTATE, so a client sees
e.g.::

    ERROR:  vision.extract_features: argument "model" names no registered model: 'nope'
    HINT:  SELECT name FROM vision.models lists the registered models.
"""

# SQLSTATEs (Postgres error codes appendix).
INVALID_PARAMETER = "22023"
NULL_VALUE = "22004"
UNDEFINED_OBJECT = "42704"
DUPLICATE_OBJECT = "42710"
INSUFFICIENT_PRIVILEGE = "42501"
INVALID_BINARY = "22P03"
DATATYPE_MISMATCH = "42804"
OBJECT_IN_USE = "55006"
EXTERNAL_ERROR = "58000"
INSUFFICIENT_RESOURCES = "53000"
PROGRAM_LIMIT_EXCEEDED = "54000"
DATA_CORRUPTED = "XX001"


class PgvisionError(Exception):
    """A user-facing error: ``function: message`` plus an optional hint."""

    def __init__(self, function, message, sqlstate=INVALID_PARAMETER, hint=None):
        super().__init__(f"{function}: {message}")
        self.function = function
        self.sqlstate = sqlstate
        self.hint = hint


class ImageError(ValueError):
    """Image bytes that cannot become a model input; ``str()`` is the reason."""


def require(function, argument, value, condition, expected, sqlstate=INVALID_PARAMETER):
    """Raise unless ``condition``: 'argument "x" must be <expected>, got <value>'."""
    if not condition:
        raise PgvisionError(function, f'argument "{argument}" must be {expected}, got {value!r}',
                            sqlstate)


def require_not_null(function, argument, value):
    if value is None:
        raise PgvisionError(function, f'argument "{argument}" must not be NULL', NULL_VALUE)


def require_int_range(function, argument, value, low, high):
    require_not_null(function, argument, value)
    require(function, argument, value, low <= value <= high, f"between {low} and {high}")


def require_choice(function, argument, value, choices):
    require_not_null(function, argument, value)
    require(function, argument, value, value in choices, "one of " + ", ".join(map(repr, choices)))
