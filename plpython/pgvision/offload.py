"""TensorFlow work in a child process: a backend hands heavy, one-off jobs (loading a Keras
model to check it, converting it to ONNX, fine-tuning) to ``python -m pgvision.offload``.

Why a child: TensorFlow, tf2onnx and Keras keep what they allocate for the life of the
process, so a backend that converted Inception-v3 cut at ``mixed7`` stayed at 3.1 GB. The
child exits and gives every byte back; the backend then maps the small ONNX file. While the
child works, the backend relays its progress as NOTICEs (and one at least every
``HEARTBEAT`` seconds), and checks for a query cancel: a cancel or an error kills the child,
and nothing it half-made is kept (its outputs go to temporary names).

The protocol is one JSON object per line on the child's own output channel:
``{"progress": text}`` any number of times, then ``{"result": {...}}`` or
``{"error": {"message", "sqlstate", "hint"}}``. Anything else the child's libraries print
goes to a file whose tail is quoted if the child dies.

    >>> run(None, "vision.register_model", "echo", {"x": 1})   # doctest: +SKIP
    {'x': 1}
"""

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

from .errors import EXTERNAL_ERROR, PgvisionError

HEARTBEAT = 5.0  # seconds between NOTICEs while the child is silent
POLL = 0.5  # seconds between cancel checks
_PROTOCOL_FD_ENV = "PGVISION_OFFLOAD_FD"


def python_executable():
    """The interpreter the backend's Python is (plpython3u: Debian's /usr/bin/python3)."""
    if os.path.basename(sys.executable or "").startswith("python"):
        return sys.executable
    return os.path.join(sys.base_exec_prefix, "bin", "python3")


def child_environment():
    """The backend's environment, with its module path, so the child imports what it does."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def run(plpy, function, job, args):
    """Run ``job`` with ``args`` (JSON-able) in a child; its result dict, or its error raised
    as a :class:`PgvisionError` of ``function``. ``plpy`` None: no NOTICEs, no cancel checks
    (a parallel worker, a script)."""
    log = tempfile.TemporaryFile()
    read_end, write_end = os.pipe()
    env = child_environment()
    env[_PROTOCOL_FD_ENV] = str(write_end)
    child = subprocess.Popen([python_executable(), "-m", "pgvision.offload", job],
                             stdin=subprocess.PIPE, stdout=log, stderr=log, env=env,
                             pass_fds=(write_end,), close_fds=True,
                             # a backend's process group gets its cancel (SIGINT): the
                             # backend must see it first, and then ends the child itself
                             start_new_session=True)
    os.close(write_end)
    lines = queue.Queue()

    def reader():
        with os.fdopen(read_end, "r", encoding="utf-8") as fh:
            for line in fh:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    try:
        try:
            child.stdin.write(json.dumps(args).encode())
            child.stdin.close()
        except BrokenPipeError:  # it died at once: _relay says how
            pass
        return _relay(plpy, function, child, lines, log)
    finally:
        if child.poll() is None:  # cancelled or failed while it ran: nothing half-made stays
            child.kill()
            child.wait()
        log.close()


def _relay(plpy, function, child, lines, log):
    started = last_notice = time.monotonic()
    last_text = "starting"
    while True:
        try:
            line = lines.get(timeout=POLL)
        except queue.Empty:
            line = ""
        now = time.monotonic()
        if line is None:
            break
        if line:
            message = json.loads(line)
            if "progress" in message:
                last_text = message["progress"]
                if plpy is not None:
                    plpy.notice(f"{function}: {last_text} ({now - started:.0f} s)")
                last_notice = now
                continue
            child.wait()
            if "result" in message:
                return message["result"]
            error = message["error"]
            raise PgvisionError(function, error["message"], error.get("sqlstate") or
                                EXTERNAL_ERROR, hint=error.get("hint"))
        if plpy is not None:
            plpy.execute("SELECT 1")  # where a query cancel is noticed (raises here)
            if now - last_notice >= HEARTBEAT:
                plpy.notice(f"{function}: still {last_text} ({now - started:.0f} s)")
                last_notice = now
    code = child.wait()
    log.seek(0)
    tail = log.read()[-800:].decode("utf-8", "replace").strip().replace("\n", " | ")
    raise PgvisionError(function, f"the worker process ended without a result (exit code "
                        f"{code}; last step: {last_text}): {tail or 'no output'}",
                        EXTERNAL_ERROR)


# --- the child ---------------------------------------------------------------------------

# job name → (module, function(args, progress) → result)
JOBS = {"prepare_model": ("extractors", "prepare_model"),
        "fine_tune": ("finetune", "fine_tune_job"),
        "echo": None}


def _job(name):
    if JOBS[name] is None:  # the protocol's own test
        return lambda args, progress: args
    import importlib
    module, function = JOBS[name]
    return getattr(importlib.import_module(f"pgvision.{module}"), function)


def _exit_with_parent():
    """End the child if its backend ends (a backend that exits at once, as on a server's
    immediate shutdown, cannot kill it)."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    out = os.fdopen(int(os.environ[_PROTOCOL_FD_ENV]), "w", encoding="utf-8", buffering=1)

    def send(**message):
        out.write(json.dumps(message) + "\n")

    def progress(text):
        send(progress=text)

    try:
        args = json.load(sys.stdin)
        send(result=_job(argv[0])(args, progress))
    except PgvisionError as err:
        send(error={"message": str(err).split(": ", 1)[-1], "sqlstate": err.sqlstate,
                    "hint": err.hint})
    except Exception as err:  # the user needs the reason, whatever raised it
        send(error={"message": f"{type(err).__name__}: {str(err)[:500]}"})
    out.close()


if __name__ == "__main__":
    main()
