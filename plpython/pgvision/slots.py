"""Model-holding backends: a cluster-wide cap on how many processes keep a model in memory.

Each backend that loads a model keeps 0.1-1 GB resident for its life. A cluster-wide
count of such backends is kept with one lock file per slot under the data directory:
flock() is released by the kernel when the process exits, however it exits, so a slot can
never leak. A backend takes one slot before its first model load and keeps it.
"""

import errno
import fcntl
import os

from .errors import INSUFFICIENT_RESOURCES, PgvisionError
from .files import runtime_dir

_SLOT = {"fd": None, "number": None}


def default_max_model_backends():
    """Half the machine's memory at ~1 GiB per model-holding backend (at least 1)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, memory // (2 << 30))


def _try_lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def hold_model_slot(function, limit):
    """Take a model slot for this backend, or refuse when ``limit`` backends hold one
    (``limit`` 0: no limit)."""
    if _SLOT["fd"] is not None:
        return _SLOT["number"]
    directory = runtime_dir("slots")
    os.makedirs(directory, exist_ok=True)
    for number in range(limit if limit > 0 else 1 << 16):
        fd = _try_lock(os.path.join(directory, f"slot{number}"))
        if fd is not None:
            _SLOT.update(fd=fd, number=number)
            record_models([])
            return number
    raise PgvisionError(function, f"{limit} backends already hold a model "
                        f"(pgvision.max_model_backends = {limit}); each keeps 0.1-0.8 GB of memory",
                        INSUFFICIENT_RESOURCES,
                        hint="SELECT * FROM vision.model_backends() lists them. Use fewer sessions "
                        "(a pool), close idle ones, or raise pgvision.max_model_backends.")


def record_models(models):
    """Record this process and what it holds ("name (runtime)" lines) in its slot file."""
    if _SLOT["fd"] is None:
        return
    text = "\n".join([str(os.getpid()), *models]).encode()
    os.ftruncate(_SLOT["fd"], 0)
    os.pwrite(_SLOT["fd"], text, 0)


def model_backends():
    """Rows (slot, pid, rss_mb, models) of the backends holding a model now; ``models`` are
    "name (runtime)" strings."""
    directory = runtime_dir("slots")
    rows = []
    for name in sorted(os.listdir(directory) if os.path.isdir(directory) else [],
                       key=lambda n: int(n[4:]) if n[4:].isdigit() else -1):
        number = int(name[4:]) if name.startswith("slot") and name[4:].isdigit() else None
        if number is None:
            continue
        path = os.path.join(directory, name)
        mine = number == _SLOT["number"]
        if not mine:
            fd = _try_lock(path)
            if fd is not None:  # free: nobody holds it
                os.close(fd)
                continue
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        pid = os.getpid() if mine else int(lines[0]) if lines[0].isdigit() else 0
        rows.append((number, pid, _rss_mb(pid), [line for line in lines[1:] if line]))
    return rows


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


