"""Trained models: a vectorised tree evaluator, the artifact on disk, and the trained predictor.

Artifact (DESIGN.md §6): a directory with ``manifest.json`` and one LightGBM **text** model per
target. No pickle anywhere. The manifest carries the feature-schema hash; loading refuses a
mismatch. Models (all over :data:`router.features.FEATURE_NAMES`):

* ``latency_p50``: quantile 0.5 of log latency; ``latency_pq``: quantile ``alpha`` of log latency;
  both shifted per backend by split-conformal offsets fitted on a held-out time slice;
* ``p_fail``: binary, P(the attempt fails for a reason other than the deadline);
* ``correction``: L2 regression of correction seconds on rows that carry a correction label.

Decisions need all four models for ~8 rows in well under 100 us. ``Booster.predict`` costs
~90 us per call even for one row, so :class:`ForestEvaluator` turns every tree of every model
into a *perfect* binary tree of one depth and walks all rows x all trees level by level in numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._types import BackendProfile, RouteContext, RouteRequest
from .coldstart import ColdStartPredictor, option_priors
from .features import FEATURE_NAMES, candidate_matrix, schema_hash
from .policy import Predictions

FORMAT_VERSION = 1
MODEL_NAMES: tuple[str, ...] = ("latency_p50", "latency_pq", "p_fail", "correction")
MANIFEST = "manifest.json"
#: trees deeper than this fall back to ``Booster.predict`` (a perfect tree doubles per level)
MAX_PERFECT_DEPTH = 10


class ForestEvaluator:
    """Evaluate several LightGBM models at once from their JSON dumps: ``raw(X) -> (rows, models)``.

    Each tree becomes arrays ``feature``/``threshold`` over ``2**D - 1`` internal slots and
    ``value`` over ``2**D`` leaves; a shallow leaf is copied across its padded subtree and its
    padded splits always go left (threshold +inf). A row goes right when ``x > threshold``, as
    LightGBM does for numerical splits; categorical splits are not supported (none are trained).
    """

    def __init__(self, dumps: Sequence[dict[str, Any]]) -> None:
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

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (sum of leaf values) per row and model; rows must be float64 without NaN."""
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


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ValueError(f"router model directory {str(model_dir)!r} has no {MANIFEST}; "
                         "train one with `pixelroute train --jsonl FILE --out DIR`")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {manifest.get('format_version')!r}; "
                         f"this pixelroute reads {FORMAT_VERSION}")
    expected = schema_hash()
    if manifest.get("feature_schema_hash") != expected:
        raise ValueError(f"{path} was trained on feature schema {manifest.get('feature_schema_hash')!r} but "
                         f"this pixelroute computes schema {expected!r}; retrain with `pixelroute train`")
    return manifest


class TrainedModels:
    """The four boosters of an artifact, their fast evaluator and the manifest."""

    def __init__(self, model_dir: Path, manifest: dict[str, Any]) -> None:
        import lightgbm as lgb

        self.dir = model_dir
        self.manifest = manifest
        self.version: str = manifest["version"]
        files: dict[str, str] = manifest["model_files"]
        self.boosters = []
        for name in MODEL_NAMES:
            path = model_dir / files.get(name, "")
            if name not in files or not path.is_file():
                raise ValueError(f"router model directory {str(model_dir)!r} lacks the {name!r} model "
                                 f"file {files.get(name)!r} named in {MANIFEST}")
            self.boosters.append(lgb.Booster(model_str=path.read_text()))
        n_feat = self.boosters[0].num_feature()
        if n_feat != len(FEATURE_NAMES):
            raise ValueError(f"model files in {str(model_dir)!r} use {n_feat} features, expected {len(FEATURE_NAMES)}")
        self.evaluator = ForestEvaluator([b.dump_model() for b in self.boosters])
        self.backend_codes: dict[str, int] = {name: i for i, name in enumerate(manifest["backends"])}
        self.feature_profiles = {d["name"]: BackendProfile.from_dict(d) for d in manifest["backend_profiles"]}
        conf = manifest["conformal"]
        self.alpha: float = float(manifest["latency_quantile"])
        self.shift_p50 = {b: float(v) for b, v in conf["p50"].items()}
        self.shift_pq = {b: float(v) for b, v in conf["pq"].items()}

    @classmethod
    def load(cls, model_dir: str | Path) -> TrainedModels:
        path = Path(model_dir)
        return cls(path, read_manifest(path))

    def raw_booster(self, x: np.ndarray) -> np.ndarray:
        """Reference path: one batched ``Booster.predict`` per model, one thread (benchmarks, tests)."""
        cols = [b.predict(x, raw_score=True, num_threads=1) for b in self.boosters]
        return np.column_stack(cols)


class LgbmPredictor:
    """Predictions from a trained artifact; backends it never saw get cold-start predictions."""

    name = "lgbm"

    def __init__(self, models: TrainedModels) -> None:
        self.models = models
        self.version = models.version
        self._cold = ColdStartPredictor()

    def predict(self, request: RouteRequest, options: Sequence[tuple[BackendProfile, int | None]],
                context: RouteContext, priors: tuple[np.ndarray, np.ndarray] | None = None) -> Predictions:
        m = self.models
        lat, price = priors or option_priors(request, options)
        known = [i for i, (p, _) in enumerate(options) if p.name in m.backend_codes]
        if len(known) < len(options):
            preds = self._cold.predict(request, options, context, (lat, price))
        else:
            n = len(options)
            preds = Predictions(np.empty(n), np.empty(n), np.empty(n), np.empty(n), price)
        if not known:
            return preds
        # model features describe a backend as it was described at training time, so that a
        # profile edited since (say a new price) cannot push rows outside what the trees saw
        feat_opts = [(m.feature_profiles.get(options[i][0].name, options[i][0]), options[i][1]) for i in known]
        x = candidate_matrix(request, feat_opts, context, m.backend_codes)
        raw = m.evaluator.raw(x)
        names = [options[i][0].name for i in known]
        s50 = np.array([m.shift_p50.get(b, m.shift_p50["*"]) for b in names])
        sq = np.array([m.shift_pq.get(b, m.shift_pq["*"]) for b in names])
        log50 = raw[:, 0] + s50
        logq = np.maximum(raw[:, 1] + sq, log50 + 1e-3)
        z_alpha = 1.6448536 if abs(m.alpha - 0.95) < 1e-9 else _z(m.alpha)
        preds.latency_p50_s[known] = np.exp(log50)
        preds.latency_sigma[known] = (logq - log50) / z_alpha
        preds.p_fail[known] = 1.0 / (1.0 + np.exp(-raw[:, 2]))
        preds.correction_s[known] = np.maximum(raw[:, 3], 0.0)
        return preds


def _z(alpha: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(alpha) if 0.5 < alpha < 1 else math.nan
