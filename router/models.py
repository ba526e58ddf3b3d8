"""Trained models: a vectorised tree evaluator, the artifact on disk, and the trained predictor.

Artifact: a directory with ``manifest.json`` and one LightGBM **text** model per
target. No pickle anywhere. The manifest carries the feature-schema hash (loading refuses a
mismatch) and a SHA-256 per model file (loading refuses a damaged file; see
:mod:`pixelroute.router._artifact`, where the format version, 3, is defined). Models (all over
:data:`pixelroute.router.features.FEATURE_NAMES`):

* ``latency_p50``: quantile 0.5 of log latency; ``latency_pq``: quantile ``alpha`` of log latency;
  both shifted per backend by split-conformal offsets fitted on a held-out time slice;
* ``p_fail``: binary, P(the attempt fails for a reason other than the deadline);
* ``correction``: L2 regression of correction seconds on rows that carry a correction label.

Every model learns on top of the cold-start prior: training passes :func:`init_scores` (the
prior's log-latency median and quantile, logit P(fail) and correction seconds, all read from the
feature rows) as LightGBM's ``init_score``, and serving adds them back to the trees' raw score.
With little data the trained router therefore predicts what the cold-start router predicts; with
data, trees correct the prior where the logs disagree with it.

Decisions need all four models for ~8 rows in well under 100 us. ``Booster.predict`` costs
~90 us per call even for one row, so :class:`ForestEvaluator` turns every tree of every model
into a *perfect* binary tree of one depth and walks all rows x all trees level by level in numpy.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _cforest
from ._artifact import FORMAT_VERSION, MANIFEST, MODEL_NAMES, ArtifactError, read_manifest, read_model_texts
from ._lgbm_text import check_model_text
from ._types import BackendProfile, RouteContext, RouteRequest
from .coldstart import prior_predictions, reference_latency
from .features import (
    COL_PRIOR_CORRECTION,
    COL_PRIOR_LOG_P50,
    COL_PRIOR_LOGIT_FAIL,
    COL_PRIOR_SIGMA,
    FEATURE_NAMES,
    featurize_table,
    option_table,
    prices,
)
from .policy import Predictions, expand_options

__all__ = ["FORMAT_VERSION", "MANIFEST", "MODEL_NAMES", "ArtifactError", "ForestEvaluator", "LgbmPredictor",
           "TrainedModels", "init_scores", "load_predictor", "read_manifest", "z_score"]

#: trees deeper than this fall back to ``Booster.predict`` (a perfect tree doubles per level)
MAX_PERFECT_DEPTH = 10


class ForestEvaluator:
    """Evaluate several LightGBM models at once from their JSON dumps: ``raw(X) -> (rows, models)``.

    Each tree becomes arrays ``feature``/``threshold`` over ``2**D - 1`` internal slots and
    ``value`` over ``2**D`` leaves; a shallow leaf is copied across its padded subtree and its
    padded splits always go left (threshold +inf). A row goes right when ``x > threshold``, as
    LightGBM does for numerical splits; categorical splits are not supported (none are trained).
    """

    def __init__(self, dumps: Sequence[dict[str, Any]], compiled: bool = True) -> None:
        trees_per_model = [[t["tree_structure"] for t in d["tree_info"]] for d in dumps]
        all_trees = [t for trees in trees_per_model for t in trees]
        if not all_trees:
            raise ValueError("cannot build an evaluator from models without trees")
        depth = max(1, max(_depth(t) for t in all_trees))
        if depth > MAX_PERFECT_DEPTH:
            raise ValueError(f"tree depth {depth} exceeds {MAX_PERFECT_DEPTH}; train with a smaller max_depth")
        n_int, n_leaf = (1 << depth) - 1, 1 << depth
        t = len(all_trees)
        self.depth = depth
        self.feature = np.zeros((t, n_int), dtype=np.int64)
        self.threshold = np.full((t, n_int), np.inf)
        self.value = np.zeros((t, n_leaf))
        for k, tree in enumerate(all_trees):
            self._fill(k, tree, 0, 0, depth)
        self.feature_flat = self.feature.ravel()
        self.threshold_flat = self.threshold.ravel()
        self.value_flat = self.value.ravel()
        self.tree_offsets = np.arange(t, dtype=np.int64) * n_int
        self.leaf_offsets = np.arange(t, dtype=np.int64) * n_leaf - n_int
        counts = [len(trees) for trees in trees_per_model]
        self.model_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        if min(counts) == 0:
            raise ValueError("every model needs at least one tree")
        self.n_models = len(dumps)
        self._native_arrays(trees_per_model)
        self._lib = _cforest.load() if compiled else None

    def _native_arrays(self, trees_per_model: list[list[dict[str, Any]]]) -> None:
        """The trees as they are (not padded) for the compiled walker: child ids >= 0 are internal nodes,
        ``-1 - j`` is leaf ``j``."""
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        leaves: list[float] = []
        roots: list[int] = []
        tree_model: list[int] = []

        def add(node: dict[str, Any]) -> int:
            if "leaf_value" in node:
                leaves.append(float(node["leaf_value"]))
                return -len(leaves)  # leaf j = len - 1  ->  -1 - j
            k = len(feature)
            feature.append(int(node["split_feature"]))
            threshold.append(float(node["threshold"]))
            left.append(0)
            right.append(0)
            left[k] = add(node["left_child"])
            right[k] = add(node["right_child"])
            return k

        for m, trees in enumerate(trees_per_model):
            for tree in trees:
                roots.append(add(tree))
                tree_model.append(m)
        i32 = np.int32
        self._c_arrays = (np.array(feature, dtype=i32), np.array(threshold, dtype=np.float64),
                          np.array(left, dtype=i32), np.array(right, dtype=i32),
                          np.array(leaves, dtype=np.float64), np.array(roots, dtype=i32),
                          np.array(tree_model, dtype=i32))
        p = [a.ctypes.data for a in self._c_arrays]
        self._c_forest = _cforest.Forest(*p, len(roots), len(trees_per_model))
        self._c_forest_ptr = ctypes.addressof(self._c_forest)

    @property
    def compiled(self) -> bool:
        """Whether :meth:`raw` runs the compiled walker (see :mod:`pixelroute.router._cforest`)."""
        return self._lib is not None

    def _fill(self, k: int, node: dict[str, Any], pos: int, level: int, depth: int) -> None:
        if "leaf_value" in node:
            # pad: every internal slot below goes left (inf threshold); every bottom leaf gets the value
            lo, hi = pos, pos
            for _ in range(depth - level):
                lo, hi = 2 * lo + 1, 2 * hi + 2
            first_leaf = lo - ((1 << depth) - 1)
            self.value[k, first_leaf:first_leaf + (hi - lo + 1)] = node["leaf_value"]
            return
        if node.get("decision_type", "<=") != "<=":
            raise ValueError(f"unsupported split type {node.get('decision_type')!r} (categorical splits)")
        self.feature[k, pos] = int(node["split_feature"])
        self.threshold[k, pos] = float(node["threshold"])
        self._fill(k, node["left_child"], 2 * pos + 1, level + 1, depth)
        self._fill(k, node["right_child"], 2 * pos + 2, level + 1, depth)

    def raw(self, x: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """Raw scores (``init`` plus the sum of leaf values) per row and model; float64 rows without NaN.

        ``init`` (rows x models, C-contiguous float64) is updated in place and returned.
        """
        if init is not None and (init.shape != (x.shape[0], self.n_models) or not init.flags.c_contiguous
                                 or init.dtype != np.float64):
            raise ValueError(f"`init` must be a C-contiguous float64 array of shape {(x.shape[0], self.n_models)}")
        if self._lib is not None:
            xc = np.ascontiguousarray(x, dtype=np.float64)
            out = np.zeros((xc.shape[0], self.n_models)) if init is None else init
            self._lib.forest_raw(self._c_forest_ptr, xc.ctypes.data, xc.shape[0], xc.shape[1], out.ctypes.data)
            return out
        if init is None:
            return self.raw_numpy(x)
        init += self.raw_numpy(x)
        return init

    def predict_compiled(self, x: np.ndarray, prior_col: int, z: float, shift: np.ndarray, out: np.ndarray) -> None:
        """The trained predictor's arithmetic in C (``forest_predict`` in :mod:`pixelroute.router._cforest`): ``out``
        (4 x rows) gets p50 s, sigma, P(fail), correction s. All arrays C-contiguous float64; the four
        models are :data:`MODEL_NAMES` and the prior columns start at ``prior_col``."""
        assert self._lib is not None
        self._lib.forest_predict(self._c_forest_ptr, x.ctypes.data, x.shape[0], x.shape[1], prior_col, z,
                                 shift.ctypes.data, out.ctypes.data)

    def raw_numpy(self, x: np.ndarray) -> np.ndarray:
        """The numpy path of :meth:`raw` (used when no C compiler is available)."""
        rows, n_feat = x.shape
        xf = np.ascontiguousarray(x, dtype=np.float64).ravel()
        row_off = (np.arange(rows, dtype=np.int64) * n_feat)[:, None]
        idx = np.zeros((rows, len(self.tree_offsets)), dtype=np.int64)
        for _ in range(self.depth):
            node = idx + self.tree_offsets
            go_right = xf[row_off + self.feature_flat[node]] > self.threshold_flat[node]
            idx = 2 * idx + 1 + go_right
        vals = self.value_flat[idx + self.leaf_offsets]
        out: np.ndarray = np.add.reduceat(vals, self.model_starts, axis=1)
        return out


def _depth(node: dict[str, Any]) -> int:
    if "leaf_value" in node:
        return 0
    return 1 + max(_depth(node["left_child"]), _depth(node["right_child"]))


class TrainedModels:
    """The four boosters of an artifact, their fast evaluator and the manifest.

    ``manifest`` comes from :func:`read_manifest` (checked); every model file is confined to
    ``model_dir``, must match its SHA-256 and pass a structural check before LightGBM parses it,
    so a damaged artifact is an :class:`~pixelroute.router._artifact.ArtifactError` naming the file, never a crash.
    """

    def __init__(self, model_dir: Path, manifest: dict[str, Any]) -> None:
        self.dir = model_dir
        self.manifest = manifest
        self.version: str = manifest["version"]
        files: dict[str, str] = manifest["model_files"]
        texts = read_model_texts(model_dir, manifest)  # every hash verified before LightGBM sees a byte
        import lightgbm as lgb

        self.boosters = []
        for name in MODEL_NAMES:
            path = model_dir / files[name]
            try:
                check_model_text(texts[name])
                booster = lgb.Booster(model_str=texts[name])
            except Exception as exc:  # lightgbm.basic.LightGBMError, the structural check's ValueError, ...
                raise ArtifactError(f"the {name!r} model file {str(path)!r} is not a usable LightGBM text model: "
                                    f"{exc}", path) from exc
            if booster.num_feature() != len(FEATURE_NAMES):
                raise ArtifactError(f"the {name!r} model file {str(path)!r} uses {booster.num_feature()} features, "
                                    f"expected {len(FEATURE_NAMES)}", path)
            self.boosters.append(booster)
        try:
            self.evaluator = ForestEvaluator([b.dump_model() for b in self.boosters])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ArtifactError(f"the model files in {str(model_dir)!r} cannot be evaluated: {exc}", model_dir) from exc
        self.backend_codes: dict[str, int] = {name: i for i, name in enumerate(manifest["backends"])}
        self.feature_profiles = {d["name"]: BackendProfile.from_dict(d) for d in manifest["backend_profiles"]}
        conf = manifest["conformal"]
        self.alpha: float = float(manifest["latency_quantile"])
        self.shift_p50 = {b: float(v) for b, v in conf["p50"].items()}
        self.shift_pq = {b: float(v) for b, v in conf["pq"].items()}

    @classmethod
    def load(cls, model_dir: str | Path) -> TrainedModels:
        """Load and check an artifact; any fault is an :class:`~pixelroute.router.ArtifactError` (a ``ValueError``)."""
        path = Path(model_dir)
        return cls(path, read_manifest(path))

    def raw_booster(self, x: np.ndarray) -> np.ndarray:
        """Reference path: one batched ``Booster.predict`` per model, one thread (benchmarks, tests)."""
        cols = [b.predict(x, raw_score=True, num_threads=1) for b in self.boosters]
        return np.column_stack(cols)


_PRIOR_COLS = [COL_PRIOR_LOG_P50, COL_PRIOR_SIGMA, COL_PRIOR_LOGIT_FAIL, COL_PRIOR_CORRECTION]
# forest_predict (pixelroute.router._cforest) reads the four prior columns as one contiguous block
assert list(range(COL_PRIOR_LOG_P50, COL_PRIOR_LOG_P50 + 4)) == _PRIOR_COLS


def _prior_to_init(alpha: float) -> np.ndarray:
    """``rows[:, _PRIOR_COLS] @ this`` = :func:`init_scores` (one matrix product on the serving path)."""
    a = np.eye(len(MODEL_NAMES))
    a[0, 1] = 1.0             # the quantile model starts at log p50 ...
    a[1, 1] = z_score(alpha)  # ... plus z(alpha) prior sigmas
    return a


def init_scores(rows: np.ndarray, alpha: float) -> np.ndarray:
    """The cold-start prior in each model's raw-score space, ``(rows, 4)`` in :data:`MODEL_NAMES` order:
    log p50, log p50 + z(alpha) sigma, logit P(fail), correction seconds."""
    out: np.ndarray = rows[:, _PRIOR_COLS] @ _prior_to_init(alpha)
    return out


class _OptionPlan:
    """Per list of options: how the model sees them (training-time profiles, codes, conformal shifts)."""

    def __init__(self, models: TrainedModels, options: Sequence[tuple[BackendProfile, int | None]]) -> None:
        self.options = list(options)
        #: the caller's list itself: a router passes the same list for the same backends (cheap lookup)
        self.given = options
        # model features describe a backend as it was described at training time, so that a
        # profile edited since (say a new typical latency) keeps the prior the trees were fitted on
        self.feature_options = [(models.feature_profiles.get(p.name, p), s) for p, s in self.options]
        self.same_profiles = all(a == b for (a, _), (b, _) in zip(self.options, self.feature_options, strict=True))
        self.table = option_table(self.feature_options)
        names = [p.name for p, _ in self.options]
        self.known = np.array([n in models.backend_codes for n in names], dtype=bool)
        self.all_known = bool(self.known.all())
        #: conformal offsets per option, in raw-score space (added to the init scores)
        self.shift = np.zeros((len(names), len(MODEL_NAMES)))
        self.shift[:, 0] = [models.shift_p50.get(n, models.shift_p50["*"]) for n in names]
        self.shift[:, 1] = [models.shift_pq.get(n, models.shift_pq["*"]) for n in names]


class LgbmPredictor:
    """Predictions from a trained artifact; backends it never saw get cold-start predictions."""

    name = "lgbm"

    def __init__(self, models: TrainedModels) -> None:
        self.models = models
        self.version = models.version
        self._z = z_score(models.alpha)
        self._to_init = _prior_to_init(models.alpha)
        self._plans: dict[tuple[tuple[int, int | None], ...], _OptionPlan] = {}
        #: id of the options list a router passed -> its plan (the plan keeps the list alive)
        self._plans_by_list: dict[int, _OptionPlan] = {}

    def _plan(self, options: Sequence[tuple[BackendProfile, int | None]]) -> _OptionPlan:
        plan = self._plans_by_list.get(id(options))
        if plan is not None and plan.given is options:
            return plan
        key = tuple((id(p), s) for p, s in options)
        plan = self._plans.get(key)
        # the plan keeps its profiles alive, so an id in the key cannot be reused while it exists
        if plan is None or any(a is not b for (a, _), (b, _) in zip(plan.options, options, strict=True)):
            if len(self._plans) >= 256:
                self._plans.clear()
            plan = self._plans[key] = _OptionPlan(self.models, options)
        if len(self._plans_by_list) >= 256:
            self._plans_by_list.clear()
        self._plans_by_list[id(options)] = plan
        plan.given = options
        return plan

    def predict(self, request: RouteRequest, options: Sequence[tuple[BackendProfile, int | None]],
                context: RouteContext) -> Predictions:
        m = self.models
        plan = self._plan(options)
        rows, price = featurize_table(request, plan.table, context, m.backend_codes)
        if not plan.same_profiles:
            price = prices(request, options)  # the bill follows the live profile
        ev = m.evaluator
        if ev.compiled and len(MODEL_NAMES) == ev.n_models:
            # one C call: prior init scores + conformal shift, the trees, exp / sigmoid / clamps
            out = np.empty((4, len(rows)))
            ev.predict_compiled(rows, COL_PRIOR_LOG_P50, self._z, plan.shift, out)
            preds = Predictions(out[0], out[1], out[2], out[3], price, reference_latency(rows))
        else:
            # trees add their corrections onto the prior (init scores) shifted by the conformal offsets
            start = rows[:, _PRIOR_COLS] @ self._to_init
            start += plan.shift
            raw = ev.raw(rows, init=start)
            log50 = raw[:, 0]
            preds = Predictions(np.exp(log50), np.maximum(raw[:, 1] - log50, 1e-3) / self._z,
                                1.0 / (1.0 + np.exp(-raw[:, 2])), np.maximum(raw[:, 3], 0.0), price,
                                reference_latency(rows))
        if not plan.all_known:
            prior = prior_predictions(rows, price)
            unknown = ~plan.known
            for name in ("latency_p50_s", "latency_sigma", "p_fail", "correction_s"):
                getattr(preds, name)[unknown] = getattr(prior, name)[unknown]
        return preds


def load_predictor(model_dir: str | Path) -> LgbmPredictor:
    """A predictor over the artifact in ``model_dir``, checked end to end: it loads AND predicts.

    One prediction for the backends the artifact was trained on catches what field checks cannot
    (a profile value that breaks featurizing, a model that predicts NaN) at load time rather than
    on a request. Every fault is an :class:`~pixelroute.router._artifact.ArtifactError` naming the directory.
    """
    models = TrainedModels.load(model_dir)
    predictor = LgbmPredictor(models)
    profiles = list(models.feature_profiles.values())
    if profiles:
        try:
            preds = predictor.predict(RouteRequest("a red bicycle leaning on a wall"), expand_options(profiles),
                                      RouteContext())
            broken = [name for name in ("latency_p50_s", "latency_sigma", "p_fail", "correction_s")
                      if np.isnan(getattr(preds, name)).any()]
        except Exception as exc:  # anything the manifest's values break in featurizing or the trees
            raise ArtifactError(f"router model in {str(model_dir)!r} loads but cannot predict: "
                                f"{type(exc).__name__}: {exc}", model_dir) from exc
        if broken:
            raise ArtifactError(f"router model in {str(model_dir)!r} predicts NaN for {', '.join(broken)}",
                                model_dir)
    return predictor


def z_score(alpha: float) -> float:
    """Standard normal quantile (1.6449 at 0.95)."""
    from statistics import NormalDist

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`latency_quantile` must be strictly between 0 and 1 but is {alpha!r}")
    return NormalDist().inv_cdf(alpha)
