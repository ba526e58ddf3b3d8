"""An optional compiled tree walker: every tree of every model for a few rows in a few microseconds.

The numpy evaluator (:class:`pixelroute.router.models.ForestEvaluator`) walks all rows x all trees level by
level; with ~130 trees x ~10 candidates that is ~40 numpy calls over ~1,400 elements and costs
~50 us, half of a decision's budget. This module compiles a short C loop (below, written for
this project) with the system C compiler the first time it is needed, caches the shared library
under ``$PIXELROUTE_CACHE_DIR`` (else ``$XDG_CACHE_HOME/pixelroute``, else ``~/.cache/pixelroute``)
keyed by the source's hash, and calls it through ``ctypes``. ``forest_predict`` also does the
trained predictor's arithmetic around the trees (prior init scores + conformal shift before, exp /
sigmoid / clamps after): in numpy those are ~15 calls on 8-element arrays, ~11 us of a decision.
Without a compiler (or with ``PIXELROUTE_ROUTER_COMPILED=0``) :func:`load` returns ``None`` and
the numpy path is used: the same numbers (to the last bit or two of ``exp``), slower.
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

log = logging.getLogger("pixelroute.router")

SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* The trees of every model, as pixelroute.router.models.ForestEvaluator lays them out (not padded).
   Node k: go right when x[feature[k]] > threshold[k] (LightGBM's numerical split), else left.
   A child id >= 0 is an internal node; -1 - j is leaf j. Tree t belongs to model tree_model[t]. */
struct forest {
    const int32_t *feature; const double *threshold; const int32_t *left; const int32_t *right;
    const double *leaf_value; const int32_t *roots; const int32_t *tree_model; int64_t n_trees; int64_t n_models;
};

static void walk(const struct forest *f, const double *xr, double *o)
{
    for (int64_t t = 0; t < f->n_trees; t++) {
        int32_t node = f->roots[t];
        while (node >= 0)
            node = xr[f->feature[node]] > f->threshold[node] ? f->right[node] : f->left[node];
        o[f->tree_model[t]] += f->leaf_value[-1 - node];
    }
}

/* out[r, m] += the leaf values row r reaches in model m's trees (out holds the init scores). */
void forest_raw(const struct forest *f, const double *x, int64_t rows, int64_t n_feat, double *out)
{
    for (int64_t r = 0; r < rows; r++)
        walk(f, x + r * n_feat, out + r * f->n_models);
}

/* The trained predictor's serving step (pixelroute.router.models.LgbmPredictor, 4 models). Each model starts
   at the cold-start prior read from x's columns prior_col .. prior_col+3 (log p50, sigma, logit
   P(fail), correction s; init_scores) plus the per-row conformal shift, adds its trees, and the raw
   scores become predictions: out is 4 x rows = p50 s, log-space sigma, P(fail), correction s. */
void forest_predict(const struct forest *f, const double *x, int64_t rows, int64_t n_feat, int64_t prior_col,
                    double z, const double *shift, double *out)
{
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * n_feat, *pr = xr + prior_col, *sh = shift + 4 * r;
        double o[4] = {pr[0] + sh[0], pr[0] + z * pr[1] + sh[1], pr[2] + sh[2], pr[3] + sh[3]};
        walk(f, xr, o);
        out[r] = exp(o[0]);
        out[rows + r] = (o[1] - o[0] > 1e-3 ? o[1] - o[0] : 1e-3) / z;
        out[2 * rows + r] = 1.0 / (1.0 + exp(-o[2]));
        out[3 * rows + r] = o[3] > 0.0 ? o[3] : 0.0;
    }
}
"""


class Forest(ctypes.Structure):
    """``struct forest`` of :data:`SOURCE`: pointers into arrays the caller keeps alive."""

    _fields_ = [(name, ctypes.c_void_p) for name in
                ("feature", "threshold", "left", "right", "leaf_value", "roots", "tree_model")] + \
        [("n_trees", ctypes.c_int64), ("n_models", ctypes.c_int64)]


def _cache_dir() -> Path:
    # the same rule as pixelroute._config.default_cache_dir; the router imports nothing from the rest of pixelroute
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
                subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src), "-lm"], check=True,
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
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.forest_raw.restype = lib.forest_predict.restype = None
    lib.forest_raw.argtypes = [ptr, ptr, i64, i64, ptr]
    lib.forest_predict.argtypes = [ptr, ptr, i64, i64, i64, ctypes.c_double, ptr, ptr]
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled walker, or ``None`` (no compiler, or ``PIXELROUTE_ROUTER_COMPILED=0``)."""
    if os.environ.get("PIXELROUTE_ROUTER_COMPILED", "1") == "0":
        return None
    return _load_for(_cache_dir())
