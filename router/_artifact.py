"""Reading a router artifact without trusting it: the manifest's shape, each model file's SHA-256, paths.

An artifact is a directory with ``manifest.json`` and one LightGBM text model per target. Everything
in it is checked before any byte reaches LightGBM, whose text parser aborts or crashes the process
on a damaged model (see :mod:`pixelroute.router._lgbm_text`):

* the manifest is a bounded UTF-8 JSON object (deep nesting, huge numbers and garbage are refused)
  with the format version, the feature-schema hash and every field the router reads, typed;
* every ``model_files`` entry is a plain file name: no absolute path, no ``..``, no separator, and
  a symlink must resolve inside the directory; the file must be a regular file;
* every model file's SHA-256 equals the one training wrote into ``model_sha256``.

Every failure is an :class:`ArtifactError`, a ``ValueError`` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

#: 3: ``model_sha256`` lists a SHA-256 per model file (2: raw scores are corrections on the prior)
FORMAT_VERSION = 3
MODEL_NAMES: tuple[str, ...] = ("latency_p50", "latency_pq", "p_fail", "correction")
MANIFEST = "manifest.json"
#: a manifest is a few kB per backend; anything near this is not one
MAX_MANIFEST_BYTES = 8 << 20
#: a 300-tree model of 15 leaves is ~0.3 MB
MAX_MODEL_BYTES = 256 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RETRAIN = "retrain with `pixelroute train --jsonl FILE --out DIR` (or `--store URL`)"


class ArtifactError(ValueError):
    """Raised when a router artifact cannot be used; the message names the file and what is wrong."""

    def __init__(self, message: str, path: str | os.PathLike[str]) -> None:
        super().__init__(message)
        #: the file (or directory) at fault
        self.path = str(path)


def sha256_hex(data: bytes) -> str:
    """The digest training writes into ``model_sha256`` for a model file's bytes."""
    return hashlib.sha256(data).hexdigest()


def check_file_name(name: object, field: str, where: str | os.PathLike[str]) -> str:
    """``name`` if it is a plain file name inside the artifact directory, else :class:`ArtifactError`."""
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"`{field}` in {str(where)!r} must be a file name but is `{_show(name)}`", where)
    plain = (name not in (".", "..") and "\x00" not in name and len(name) <= 255
             and PurePosixPath(name).name == name and PureWindowsPath(name).name == name)
    if plain:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            plain = False
    if not plain:
        raise ArtifactError(f"`{field}` in {str(where)!r} must be a plain file name in the artifact directory "
                            f"(no absolute path, `..` or separator) but is `{_show(name)}`", where)
    return name


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """The manifest of ``model_dir``, checked: format version, schema hash, every field the router reads."""
    from .features import schema_hash

    path = model_dir / MANIFEST
    try:
        raw = read_bounded(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError as exc:
        raise ArtifactError(f"router model directory {str(model_dir)!r} has no {MANIFEST}; "
                            "train one with `pixelroute train --jsonl FILE --out DIR`", path) from exc
    except OSError as exc:
        raise ArtifactError(f"{str(path)!r} cannot be read: {exc.strerror or exc}", path) from exc
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{str(path)!r} is not UTF-8 text (byte {exc.start}): damaged; {_RETRAIN}", path) from exc
    except RecursionError as exc:
        raise ArtifactError(f"{str(path)!r} nests JSON deeper than a manifest ever does: damaged; {_RETRAIN}",
                            path) from exc
    except ValueError as exc:  # json.JSONDecodeError, and ints past Python's digit limit
        raise ArtifactError(f"{str(path)!r} is not valid JSON ({exc}): damaged; {_RETRAIN}", path) from exc
    if not isinstance(doc, dict):
        raise ArtifactError(f"{str(path)!r} must hold a JSON object but holds `{_show(doc)}`", path)
    version = doc.get("format_version")
    if type(version) is int and 1 <= version < FORMAT_VERSION:
        raise ArtifactError(f"{str(path)!r} has format_version {version}, written by an older pixelroute without a "
                            f"SHA-256 per model file; this pixelroute reads format_version {FORMAT_VERSION}: "
                            f"{_RETRAIN}", path)
    if type(version) is not int or version != FORMAT_VERSION:
        raise ArtifactError(f"{str(path)!r} has format_version `{_show(version)}`; this pixelroute reads "
                            f"{FORMAT_VERSION}", path)
    expected = schema_hash()
    if doc.get("feature_schema_hash") != expected:
        raise ArtifactError(f"{str(path)!r} was trained on feature schema `{_show(doc.get('feature_schema_hash'))}` "
                            f"but this pixelroute computes schema {expected!r}; retrain with `pixelroute train`", path)
    _check_fields(doc, path)
    return doc


def read_model_texts(model_dir: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Every model file's text, each confined to ``model_dir`` and matching its SHA-256 in the manifest."""
    where = model_dir / MANIFEST
    try:
        root = model_dir.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise ArtifactError(f"router model directory {str(model_dir)!r} cannot be resolved: {exc}", model_dir) from exc
    texts: dict[str, str] = {}
    for name in MODEL_NAMES:
        file_name = manifest["model_files"][name]
        path = model_dir / file_name
        try:
            real = path.resolve(strict=True)
        except FileNotFoundError as exc:
            raise ArtifactError(f"router model directory {str(model_dir)!r} lacks the {name!r} model file "
                                f"{file_name!r} named in {MANIFEST}", path) from exc
        except (OSError, RuntimeError) as exc:  # a symlink loop is RuntimeError before Python 3.13
            raise ArtifactError(f"the {name!r} model file {str(path)!r} cannot be resolved: {exc}", path) from exc
        if not real.is_relative_to(root):
            raise ArtifactError(f"`model_files.{name}` in {str(where)!r} is `{_show(file_name)}`, which resolves to "
                                f"{str(real)!r} outside the artifact directory; refused", path)
        try:
            data = read_bounded(real, MAX_MODEL_BYTES)
        except OSError as exc:
            raise ArtifactError(f"the {name!r} model file {str(path)!r} cannot be read: {exc.strerror or exc}",
                                path) from exc
        digest = sha256_hex(data)
        if digest != manifest["model_sha256"][name]:
            raise ArtifactError(f"the {name!r} model file {str(path)!r} ({len(data):,} bytes) does not match its "
                                f"SHA-256 in {MANIFEST}: expected `{manifest['model_sha256'][name]}` but the file "
                                f"hashes to `{digest}` (damaged, truncated or edited); restore the artifact or "
                                f"{_RETRAIN}", path)
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"the {name!r} model file {str(path)!r} is not UTF-8 text", path) from exc
    return texts


def read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most ``limit`` of them; never blocks on a FIFO (``OSError`` as is)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{str(path)!r} is not a regular file", path)
        if st.st_size > limit:
            raise ArtifactError(f"{str(path)!r} is {st.st_size:,} bytes, more than the {limit:,} it may be", path)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > limit:  # the file grew after the stat
                raise ArtifactError(f"{str(path)!r} is more than the {limit:,} bytes it may be", path)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def stat_key(path: Path) -> tuple[int, int, int] | None:
    """(mtime, size, inode) of ``path``; ``None`` when it does not exist."""
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def artifact_fingerprint(model_dir: str | os.PathLike[str]) -> tuple[Any, ...] | None:
    """What loading ``model_dir`` depends on: its manifest's and its files' stat keys; ``None`` without a manifest.

    A reader that failed to load an artifact tries again only once this changes, so a broken
    artifact is reported once, and one whose model files arrive after the manifest still loads.
    """
    directory = Path(model_dir)
    key = stat_key(directory / MANIFEST)
    if key is None:
        return None
    files: list[tuple[str, int, int, int]] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") or entry.name == MANIFEST:
                    continue  # temporary files of a writer come and go
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    files.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
                if len(files) >= 4096:
                    break
    except OSError:
        pass
    return (key, tuple(sorted(files)))


# -- the manifest's fields ---------------------------------------------------------------------------------------


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(path: Path, field: str, want: str, value: object) -> ArtifactError:
    if value is _MISSING:
        return ArtifactError(f"`{field}` is missing from {str(path)!r}: damaged; {_RETRAIN}", path)
    return ArtifactError(f"`{field}` in {str(path)!r} must be {want} but is `{_show(value)}`", path)


_MISSING = object()


def _is_number(v: object) -> bool:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _is_text(v: object, limit: int = 200) -> bool:
    if not isinstance(v, str) or not 0 < len(v) <= limit or not v.isprintable():
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number_map(v: object) -> bool:
    return isinstance(v, dict) and all(_is_text(k) and _is_number(x) for k, x in v.items())


#: BackendProfile fields and what each may hold in a manifest (``None`` = the field's default)
_PROFILE_FIELDS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "name": ("a backend name", _is_text),
    "kind": ("a string", _is_text),
    "local": ("true or false", lambda v: isinstance(v, bool)),
    "price": ("an object of numbers", _number_map),
    "default_steps": ("an integer", lambda v: type(v) is int),
    "default_guidance": ("a number", _is_number),
    "default_width": ("an integer", lambda v: type(v) is int),
    "default_height": ("an integer", lambda v: type(v) is int),
    "step_options": ("a list of integers", lambda v: isinstance(v, list) and all(type(s) is int for s in v)),
    "strengths": ("an object of numbers", _number_map),
    "typical_latency_s": ("a number", _is_number),
    "typical_failure_rate": ("a number", _is_number),
    "supports_negative_prompt": ("true or false", lambda v: isinstance(v, bool)),
    "supports_steps": ("true or false", lambda v: isinstance(v, bool)),
}


def _check_fields(doc: dict[str, Any], path: Path) -> None:
    if not _is_text(doc.get("version", _MISSING)):
        raise _fail(path, "version", "a non-empty printable string", doc.get("version", _MISSING))
    for key, checker in (("model_files", _check_file_entry), ("model_sha256", _check_digest)):
        table = doc.get(key, _MISSING)
        if not isinstance(table, dict):
            raise _fail(path, key, f"an object with {', '.join(MODEL_NAMES)}", table)
        for name in MODEL_NAMES:
            checker(table.get(name, _MISSING), f"{key}.{name}", path)
    backends = doc.get("backends", _MISSING)
    if not isinstance(backends, list) or not all(_is_text(b) for b in backends) or len(set(backends)) != len(backends):
        raise _fail(path, "backends", "a list of distinct backend names", backends)
    profiles = doc.get("backend_profiles", _MISSING)
    if not isinstance(profiles, list):
        raise _fail(path, "backend_profiles", "a list of objects", profiles)
    for i, profile in enumerate(profiles):
        if not isinstance(profile, dict):
            raise _fail(path, f"backend_profiles[{i}]", "an object", profile)
        if "name" not in profile:
            raise _fail(path, f"backend_profiles[{i}].name", "a backend name", _MISSING)
        for field, (want, ok) in _PROFILE_FIELDS.items():
            value = profile.get(field)
            if value is not None and not ok(value):
                raise _fail(path, f"backend_profiles[{i}].{field}", want, value)
    alpha = doc.get("latency_quantile", _MISSING)
    if not _is_number(alpha) or not 0.0 < alpha < 1.0:
        raise _fail(path, "latency_quantile", "a number strictly between 0 and 1", alpha)
    conformal = doc.get("conformal", _MISSING)
    if not isinstance(conformal, dict):
        raise _fail(path, "conformal", "an object with `p50` and `pq`", conformal)
    for part in ("p50", "pq"):
        shifts = conformal.get(part, _MISSING)
        if not _number_map(shifts) or "*" not in shifts:
            raise _fail(path, f"conformal.{part}", 'an object of numbers per backend, with "*"', shifts)


def _check_file_entry(value: object, field: str, path: Path) -> None:
    if value is _MISSING:
        raise _fail(path, field, "a file name", value)
    check_file_name(value, field, path)


def _check_digest(value: object, field: str, path: Path) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise _fail(path, field, "a SHA-256 (64 lowercase hex digits)", value)
