"""Model handles: a registered model resolved by the leader so parallel workers, which
cannot query, extract features with it.

A parallel worker cannot query (see :func:`pgvision.spi.call_no_spi`), so it cannot read the
registry. The leader resolves the model once into a handle (JSON text): the model's content
hash, how to use it, and the settings a worker needs. The model file is copied under the data
directory as <sha256>.keras; a worker loads only such files and checks the hash, so a
hand-made handle can name nothing but a model some backend has already resolved. A handle also
carries the limits the leader's session runs under, so it is signed with a key only the
server can read (``<data directory>/pgvision/handle.key``): a hand-made or edited handle is
refused rather than trusted to raise them. Those limits are the maker's, so a handle serves
only the role that made it: a worker compares it with the role it runs as, read from the
server process (``GetUserId()``, which a parallel worker inherits from its leader). A
handle of a model dropped or replaced since is refused too (see
:func:`pgvision.registry.revoke_handles`).
"""

import ctypes
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil

from . import __version__, extractors, registry, runtimes, settings, slots, spi
from .errors import (INSUFFICIENT_PRIVILEGE, OBJECT_IN_USE, UNDEFINED_OBJECT, PgvisionError,
                     require_not_null)
from .files import default_model_dir, read_manifest, runtime_dir, sha256_file

FN_HANDLE = "vision.model_handle"
FN_WITH = "vision.extract_features_with"
_HANDLE_KEYS = ("version", "name", "sha256", "input_height", "input_width", "preprocessing",
                "feature_layer", "pooling", "dims", "threads", "max_model_backends",
                "max_image_pixels", "runtime", "precision", "role", "role_name", "database",
                "registration")


_GET_USER_ID = []  # the server's GetUserId, resolved once per process (every image asks)


def _server_role():
    """The OID of the role this server process runs the query as (current_user), or None
    outside a Postgres backend."""
    if not _GET_USER_ID:
        try:
            get_user_id = ctypes.CDLL(None).GetUserId
            get_user_id.restype, get_user_id.argtypes = ctypes.c_uint32, []
        except (OSError, AttributeError):
            get_user_id = None
        _GET_USER_ID.append(get_user_id)
    return None if _GET_USER_ID[0] is None else int(_GET_USER_ID[0]())


current_role = _server_role  # replaced by tests that run without a server


def model_handle(plpy, GD, model):
    row = registry.lookup(plpy, GD, FN_HANDLE, model)
    target = runtime_dir("models", f"{row['sha256']}.keras")
    if not os.path.isfile(target) or sha256_file(target) != row["sha256"]:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        path, temporary = extractors.model_file(plpy, GD, FN_HANDLE, row)
        staging = f"{target}.{os.getpid()}.tmp"
        try:
            shutil.copyfile(path, staging)
            os.replace(staging, target)  # atomic: a worker never sees half a file
        finally:
            if temporary:
                os.unlink(path)
    runtime = handle_runtime(plpy, GD, row)
    database, token = registry.registration(plpy, GD, row["name"])
    lifted = registry.revoked_path(database, row["name"], token)
    if os.path.exists(lifted):  # left by a drop or replacement that rolled back
        os.unlink(lifted)
    role = plpy.execute(spi.plan(plpy, GD, "SELECT oid, rolname AS name FROM pg_catalog.pg_roles "
                                 "WHERE rolname OPERATOR(pg_catalog.=) current_user"))[0]
    handle = {key: row.get(key) for key in _HANDLE_KEYS}
    handle.update(version=__version__, threads=list(settings.thread_settings(plpy, GD)),
                  max_model_backends=settings.max_model_backends(plpy, GD),
                  max_image_pixels=settings.max_pixels(plpy, GD), runtime=runtime,
                  precision=settings.precision_setting(plpy, GD),
                  role=int(role["oid"]), role_name=role["name"], database=database,
                  registration=token)
    return sign(handle)


def _key():
    """This server's handle-signing key, made once (0600, under the data directory)."""
    path = runtime_dir("handle.key")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staging = f"{path}.{os.getpid()}.tmp"
        with open(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(staging, path)  # the first writer wins; everyone reads the same key
        except FileExistsError:
            pass
        os.unlink(staging)
    with open(path, encoding="ascii") as fh:
        return fh.read().strip().encode()


def _signature(body):
    return hmac.new(_key(), body.encode(), hashlib.sha256).hexdigest()


def sign(handle):
    """Handle text: the sorted JSON of ``handle`` with its HMAC-SHA256 under this server's key."""
    body = json.dumps(handle, sort_keys=True)
    return json.dumps({"handle": handle, "signature": _signature(body)}, sort_keys=True)


def handle_runtime(plpy, GD, row):
    """The runtime workers will use: ``onnx`` once a converted file exists, which this
    converts the first time (loading the model here once), so workers never convert."""
    runtime = settings.runtime_setting(plpy, GD)
    if not runtimes.runs_on_onnx(runtime):
        return "tensorflow"
    name = runtimes.onnx_file_name(row)
    if runtimes.find_onnx(extractors.onnx_dirs(), name):
        return "onnx"
    return extractors.get_extractor(plpy, GD, FN_HANDLE, row).runtime


def parse_handle(function, text):
    """The dict behind a handle of :func:`model_handle`, checked; no queries."""
    require_not_null(function, "model_handle", text)
    try:
        signed = json.loads(text)
        handle = signed["handle"]
        ok = isinstance(handle, dict) and set(_HANDLE_KEYS) <= set(handle) and \
            re.fullmatch(r"[0-9a-f]{64}", str(handle["sha256"])) is not None and \
            hmac.compare_digest(str(signed["signature"]),
                                _signature(json.dumps(handle, sort_keys=True)))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise PgvisionError(function, f'argument "model_handle" is not a handle made by '
                            f"{FN_HANDLE}(): {text[:60]!r}",
                            hint=f"Pass (SELECT {FN_HANDLE}('model')) computed before the query.")
    if handle["version"] != __version__:
        raise PgvisionError(function, f'argument "model_handle" was made by pgvision '
                            f"{handle['version']}, this server runs {__version__}", OBJECT_IN_USE,
                            hint=f"Call {FN_HANDLE}() again.")
    if os.path.exists(registry.revoked_path(handle["database"], handle["name"],
                                            handle["registration"])):
        raise PgvisionError(function, f'argument "model_handle": model {handle["name"]!r} was '
                            "dropped or replaced after the handle was made", UNDEFINED_OBJECT,
                            hint=f"Call {FN_HANDLE}() again.")
    role = current_role()
    if role != handle["role"]:
        raise PgvisionError(function, f'argument "model_handle" was made by role '
                            f"{handle['role_name']} and carries its limits; this query runs "
                            f"as another role (OID {role})", INSUFFICIENT_PRIVILEGE,
                            hint=f"Make the handle with {FN_HANDLE}() as the role that runs "
                                 "the query.")
    return handle


def cached_model_file(sha256):
    """The model file with this hash: the data directory's cache, else an installed model
    (what a Greenplum segment, whose data directory the leader never wrote, relies on)."""
    candidates = [runtime_dir("models", f"{sha256}.keras")]
    candidates += [os.path.join(default_model_dir(), entry["file"])
                   for entry in read_manifest(default_model_dir()) if entry["sha256"] == sha256]
    for path in candidates:
        if os.path.isfile(path) and sha256_file(path) == sha256:
            return path
    return None


def extractor_for_handle(GD, function, handle):
    """The cached extractor of a parsed handle, loading it without any query."""
    hit = extractors.cached_extractor(GD, handle)
    if hit is not None:
        return hit

    def keras_file():
        path = cached_model_file(handle["sha256"])
        if path is None:
            raise PgvisionError(function, f"model {handle['name']!r} ({handle['sha256'][:12]}…) "
                                "is not in this server's model cache", UNDEFINED_OBJECT,
                                hint=f"Make the handle with {FN_HANDLE}() on this server.")
        return path, False

    if handle["runtime"] == "tensorflow":
        keras_file()  # fail before taking a slot
    slots.hold_model_slot(function, handle["max_model_backends"])
    return extractors.load_extractor(GD, function, handle, keras_file, tuple(handle["threads"]),
                                     handle["runtime"], precision=handle["precision"])
