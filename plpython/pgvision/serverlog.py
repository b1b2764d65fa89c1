"""What libraries print inside a backend, kept tidy in the server log.

A backend's stderr is the server log: TensorFlow's C++ start-up lines (absl, oneDNN) and
Python warnings (scikit-learn's ``ConvergenceWarning`` with its source line) would land there
unprefixed, over several lines. Instead:

- :func:`captured_stderr` holds what C++ code writes to fd 2 while TensorFlow imports and
  writes it back as one ``LOG`` line prefixed ``pgvision: tensorflow:``;
- :func:`quiet_loggers` lowers TensorFlow's, absl's and Keras' Python loggers to errors;
- :func:`relayed_warnings` turns Python warnings raised during a call into one NOTICE each
  to the client that caused them (``pgvision: scikit-learn: ConvergenceWarning: ...``).
"""

import contextlib
import logging
import os
import sys
import tempfile
import warnings

_LIBRARIES = {"sklearn": "scikit-learn", "tensorflow": "tensorflow", "keras": "keras",
              "numpy": "numpy", "PIL": "pillow", "onnxruntime": "onnxruntime",
              "faiss": "faiss"}


def library_of(filename):
    """The library a warning's source file belongs to (by its top package), else 'python'.

    >>> library_of("/venv/lib/python3.11/site-packages/sklearn/linear_model/_sgd.py")
    'scikit-learn'
    """
    parts = filename.replace("\\", "/").split("/")
    for package, name in _LIBRARIES.items():
        if package in parts:
            return name
    return "python"


def one_line(text, limit=1000):
    """Whitespace-joined lines, at most ``limit`` characters.

    >>> one_line("a\\n  b\\n\\n")
    'a | b'
    """
    joined = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[:limit - 3] + "..."


@contextlib.contextmanager
def captured_stderr(tag, log=None):
    """Hold fd 2 (C/C++ writes, not only Python's) for the block; then hand what was
    written to ``log`` (``plpy.log``) as one line, or to stderr prefixed when no log."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = one_line(held.read().decode("utf-8", "replace"))
    if text:
        message = f"pgvision: {tag}: {text}"
        if log is not None:
            log(message)
        else:
            sys.stderr.write(message + "\n")


def quiet_loggers():
    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


# Deprecations speak to pgvision's developers (tests show them), not to its users.
_FOR_DEVELOPERS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@contextlib.contextmanager
def relayed_warnings(notice):
    """Warnings raised in the block become ``notice(...)`` calls, each distinct one once;
    deprecation warnings are dropped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield
    seen = set()
    for w in caught:
        if issubclass(w.category, _FOR_DEVELOPERS):
            continue
        text = (f"pgvision: {library_of(w.filename)}: {w.category.__name__}: "
                f"{one_line(str(w.message))}")
        if text not in seen:
            seen.add(text)
            notice(text)
