"""An optional compiled tree walker: every tree of every model for a few rows in a few microseconds.

The numpy evaluator (:class:`router.models.ForestEvaluator`) walks all rows x all trees level by
level; with ~130 trees x ~10 candidates that is ~40 numpy calls over ~1,400 elements and costs
~50 us, half of a decision's budget. This module compiles a 20-line C loop (below, written for
this project) with the system C compiler the first time it is needed, caches the shared library
under ``$PIXELROUTE_CACHE_DIR`` (else ``$XDG_CACHE_HOME/pixelroute``, else ``~/.cache/pixelroute``)
keyed by the source's hash, and calls it through ``ctypes``. Without a compiler (or with
``PIXELROUTE_ROUTER_COMPILED=0``) :func:`load` returns ``None`` and the numpy path is used: same
numbers, slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("router")

SOURCE = r"""
#include <stdint.h>

/* out[r, tree_model[t]] += value of the leaf that row r reaches in tree t (out holds the init scores).
   Node k: go right when x[feature[k]] > threshold[k] (LightGBM's numerical split), else left.
   A child id >= 0 is an internal node; -1 - j is leaf j. */
void forest_raw(const double *x, int64_t rows, int64_t n_feat, const int32_t *feature,
                const double *threshold, const int32_t *left, const int32_t *right,
                const double *leaf_value, const int32_t *roots, const int32_t *tree_model,
                int64_t n_trees, int64_t n_models, double *out)
{
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * n_feat;
        double *o = out + r * n_models;
        for (int64_t t = 0; t < n_trees; t++) {
            int32_t node = roots[t];
            while (node >= 0)
                node = xr[feature[node]] > threshold[node] ? right[node] : left[node];
            o[tree_model[t]] += leaf_value[-1 - node];
        }
    }
}
"""


def _cache_dir() -> Path:
    # the same rule as sdk._config.default_cache_dir; router imports nothing from sdk
    env = os.environ.get("PIXELROUTE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pixelroute"


@lru_cache(maxsize=4)
def _load_for(cache_dir: Path) -> ctypes.CDLL | None:
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    lib_path = cache_dir / "router-forest" / f"forest-{digest}.so"
    if not lib_path.is_file():
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
        if cc is None:
            log.info("no C compiler found: the router uses its numpy tree evaluator")
            return None
        lib_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
            src = Path(tmp) / "forest.c"
            src.write_text(SOURCE)
            out = Path(tmp) / "forest.so"
            try:
                subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src)], check=True,
                               capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("compiling the router's tree evaluator failed, using numpy: %s", exc)
                return None
            os.replace(out, lib_path)  # atomic: a concurrent loader sees the old file or the whole new one
    try:
        lib = ctypes.CDLL(str(lib_path))
    except OSError as exc:
        log.warning("loading %s failed, using numpy: %s", lib_path, exc)
        return None
    fn = lib.forest_raw
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, *([ctypes.c_void_p] * 7),
                   ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled walker, or ``None`` (no compiler, or ``PIXELROUTE_ROUTER_COMPILED=0``)."""
    if os.environ.get("PIXELROUTE_ROUTER_COMPILED", "1") == "0":
        return None
    return _load_for(_cache_dir())
