"""Offline retraining: stream §4 records, build features with the serving featurizer, fit, write.

* streaming: records are featurized in chunks of ``chunk_rows`` as they arrive (any iterator of
  dicts: a JSONL file, a telemetry store); only float arrays are kept, never the records;
* time-based split by ``ts``: the oldest 70% train, the next 15% stop early, the newest 15% is
  held out, its first half fits split-conformal latency offsets and its second half measures
  coverage, calibration and correction error (the numbers in ``manifest.json``);
* every model is fitted on top of the cold-start prior (``init_score``, see :mod:`pixelroute.router.models`);
* optional clipped inverse-propensity weights ``min(1/propensity, ips_clip)`` (normalised to mean 1),
  off by default (see :attr:`TrainParams.ips_clip` for why);
* the artifact is written to a temporary directory next to ``out_dir`` and renamed into place
  (a new directory), or its files are added under fresh names and ``manifest.json`` is replaced
  atomically (an existing directory), so a reader never sees a half-written model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import _priors
from ._artifact import check_file_name, sha256_hex
from ._types import BackendProfile, RouteRequest, state_of
from .features import (
    _P_START,
    FEATURE_NAMES,
    N_FEATURES,
    N_PROMPT,
    SCENARIOS,
    OptionTable,
    context_columns,
    feature_rows,
    operation_columns,
    prompt_vector,
    schema_hash,
)
from .models import FORMAT_VERSION, MANIFEST, MODEL_NAMES, init_scores

#: errors that say nothing about how long generation takes (latency rows skip them)
NON_LATENCY_ERRORS = frozenset({"rate_limited", "content_rejected", "server_error", "circuit_open",
                                "quota_exceeded", "invalid_output", "validation", "no_feasible_backend"})
#: labelled rows a backend needs before its strengths are re-estimated (fewer: the declared ones stay)
_MIN_STRENGTH_ROWS = 50
#: the failure model predicts these; a timeout is the latency model's business
FAILURE_ERRORS = NON_LATENCY_ERRORS - {"validation", "no_feasible_backend"}


@dataclass
class TrainParams:
    """LightGBM settings shared by the four models (shallow trees keep the evaluator fast)."""

    num_leaves: int = 15
    max_depth: int = 5
    learning_rate: float = 0.1
    num_boost_round: int = 300
    early_stopping_rounds: int = 25
    #: 100 rather than LightGBM's 20: correction labels are noisy (one defect = minutes), and small
    #: leaves learnt template-specific noise that did not carry over to a fresh prompt set
    min_data_in_leaf: int = 100
    num_threads: int = 2
    latency_quantile: float = 0.95
    #: inverse-propensity weights are ``min(1 / propensity, ips_clip)``; 1.0 (the default) = unweighted.
    #: The outcome models condition on every input the logging policy saw (request, prompt, context,
    #: backend), so logged routing does not bias them and weighting only adds variance: at 20 the
    #: P(fail) Brier score was worse than the base rate's and correction error doubled on fresh
    #: workloads (docs/router.md). Propensities stay essential for off-policy evaluation.
    ips_clip: float = 1.0
    chunk_rows: int = 50_000
    seed: int = 0
    #: LightGBM's histogram bins per feature (its default is 255)
    max_bin: int = 255
    #: re-estimate each backend's per-scenario strengths from logged corrections (see :func:`learn_strengths`)
    learn_strengths: bool = True
    #: how many rows' worth of weight the declared strengths keep in that estimate
    strength_prior_rows: float = 30.0


@dataclass
class Dataset:
    """Feature rows and targets, one row per logged attempt."""

    x: np.ndarray
    ts: np.ndarray          # seconds since the epoch
    backend: np.ndarray     # backend name per row
    latency: np.ndarray     # NaN when the row says nothing about latency
    failed: np.ndarray      # 1.0 failed, 0.0 ok, NaN excluded (timeouts)
    correction: np.ndarray  # NaN when unlabelled
    weight: np.ndarray
    backends: list[str]
    profiles: dict[str, BackendProfile]
    skipped: int

    def __len__(self) -> int:
        return len(self.ts)


def _parse_ts(ts: Any) -> float:
    if isinstance(ts, int | float):
        return float(ts)
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()


_NUMERIC = ("ts", "width", "height", "n", "guidance", "fixed_seed", "edit", "strength", "masked", "in_flight",
            "queue", "breaker", "recent", "cold", "log_ratio", "latency", "failed", "correction", "prop")


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def build_dataset(records: Iterable[dict[str, Any]], profiles: Sequence[BackendProfile] = (),
                  params: TrainParams | None = None, since: float | None = None,
                  progress: Callable[[int], None] | None = None) -> Dataset:
    """Featurize ``records`` (streamed) with the same vectorised featurizer the router serves with.

    The stream is reduced to a few numbers per record (the prompt to its cached prompt vector);
    feature rows are then computed in chunks by :func:`pixelroute.router.features.feature_rows`, exactly as
    a decision computes them, with the logged step count as the candidate's step option.
    """
    p = params or TrainParams()
    given = {b.name: b for b in profiles}
    codes: dict[str, int] = {}
    steps_seen: dict[str, Counter[int]] = {}
    option_ids: dict[tuple[str, int | None], int] = {}
    cols: dict[str, array[float]] = {k: array("d") for k in _NUMERIC}
    option_of = array("q")
    prompt_chunks: list[np.ndarray] = []
    buf = np.empty((p.chunk_rows, N_PROMPT))
    used = 0
    skipped = 0
    for n, rec in enumerate(records, 1):
        try:
            backend = str(rec["backend"])
            ts = _parse_ts(rec["ts"])
            if since is not None and ts < since:
                continue
            # the request and the backend's live state are parsed by the same code serving uses
            # (RouteRequest.from_record, RouteContext.from_dict via state_of, context_columns)
            req = RouteRequest.from_record(rec)
            prompt = req.prompt
            steps = req.steps
            row = (ts, _num(req.width), _num(req.height), float(req.n), _num(req.guidance), float(req.seed is not None),
                   *operation_columns(req))
            load = context_columns(state_of(rec.get("context"), backend))
            outcome = rec.get("outcome") or {}
        except (KeyError, TypeError, ValueError, AttributeError):
            skipped += 1
            continue
        if not prompt:
            skipped += 1  # prompt retention "hash"/"none": nothing to featurize
            continue
        if backend not in codes:
            codes[backend] = len(codes)
            steps_seen[backend] = Counter()
        if steps:
            steps_seen[backend][steps] += 1
        option_of.append(option_ids.setdefault((backend, steps), len(option_ids)))
        buf[used] = prompt_vector(prompt, req.negative_prompt is not None)
        used += 1
        if used == p.chunk_rows:
            prompt_chunks.append(buf)
            buf, used = np.empty((p.chunk_rows, N_PROMPT)), 0
        err = outcome.get("error")
        lat = outcome.get("latency_s")
        failed = math.nan if err == "timeout" else float(err in FAILURE_ERRORS or not outcome.get("ok", err is None))
        corr = rec.get("correction") or {}
        prop = (rec.get("decision") or {}).get("propensity")
        for key, value in zip(_NUMERIC, (*row, *load,
                                         float(lat) if lat is not None and err not in NON_LATENCY_ERRORS else math.nan,
                                         failed, _num(corr.get("seconds")), float(prop) if prop else 1.0),
                              strict=True):
            cols[key].append(value)
        if progress and n % 10_000 == 0:
            progress(n)
    prompt_chunks.append(buf[:used])
    c = {k: np.frombuffer(v, dtype=np.float64) if len(v) else np.empty(0) for k, v in cols.items()}
    # a backend known only from telemetry is described at serve time exactly as here: a bare
    # profile whose default steps are the ones it logged most
    stored = {b: given.get(b) or BackendProfile(name=b, default_steps=(steps_seen[b].most_common(1)[0][0]
                                                                       if steps_seen[b] else None))
              for b in codes}
    opt = np.frombuffer(option_of, dtype=np.int64) if len(option_of) else np.empty(0, dtype=np.int64)
    prompts = np.vstack(prompt_chunks)
    context = np.column_stack([c["in_flight"], c["queue"], c["breaker"], c["recent"], c["cold"], c["log_ratio"]])

    def rows_with(profiles_now: dict[str, BackendProfile]) -> np.ndarray:
        table = OptionTable([(profiles_now[b], s) for b, s in option_ids])
        code_col = table.codes(codes)
        x = np.empty((len(opt), N_FEATURES))
        for a in range(0, len(opt), p.chunk_rows):
            sl = slice(a, a + p.chunk_rows)
            x[sl] = feature_rows(table, opt[sl], prompts[sl], c["width"][sl], c["height"][sl], c["n"][sl], math.nan,
                                 c["guidance"][sl], c["fixed_seed"][sl], context[sl], code_col[opt[sl]],
                                 edit=c["edit"][sl], strength=c["strength"][sl], masked=c["masked"][sl])[0]
        return x

    x = rows_with(stored)
    backend_names = np.array(list(codes), dtype=object)
    option_backend = np.array([codes[b] for b, _ in option_ids], dtype=np.int64)
    row_backend = option_backend[opt] if len(opt) else np.empty(0, dtype=np.int64)
    if p.learn_strengths and len(opt):
        learned = learn_strengths(x, row_backend, c["correction"], _oldest(c["ts"], 0.7), list(codes), stored,
                                  p.strength_prior_rows)
        if learned != stored:
            stored = learned
            x = rows_with(stored)  # the prior columns now carry the learned strengths
    prop_arr = np.clip(c["prop"], 1e-6, 1.0)
    w = np.minimum(1.0 / prop_arr, p.ips_clip)
    w = w / w.mean() if len(w) else w
    return Dataset(x, c["ts"], backend_names[option_backend[opt]] if len(opt) else np.empty(0, dtype=object),
                   c["latency"], c["failed"], c["correction"], w, list(codes), stored, skipped)


def _oldest(ts: np.ndarray, share: float) -> np.ndarray:
    """Mask of the oldest ``share`` of rows by ``ts`` (the training slice of :func:`train`'s time split)."""
    mask = np.zeros(len(ts), dtype=bool)
    order = np.argsort(ts, kind="stable")
    mask[order[: int(share * len(ts))]] = True
    return mask


def learn_strengths(x: np.ndarray, row_backend: np.ndarray, correction: np.ndarray, use: np.ndarray,
                    backends: Sequence[str], profiles: dict[str, BackendProfile],
                    prior_rows: float) -> dict[str, BackendProfile]:
    """Each backend's per-scenario strengths re-estimated from logged correction seconds.

    The cold-start correction prior is ``BASE + penalty x sum_s P(s | prompt) x (1 - strength_s) x fix_s``.
    A vendor's declared strengths can be wrong; the logs say how long people really spent. Per backend,
    a ridge regression of (correction - BASE) on ``penalty x P(s) x fix_s`` (plus an intercept) gives the
    weakness ``1 - strength_s``, pulled towards the declared value with the weight of ``prior_rows``
    rows and clipped to [0, 2] (a weakness above 1 = defects take longer than the prior's fix time).

    The fitted strengths replace the declared ones in the profiles the model's features are built
    with (stored in the manifest, used again at serving time), so the prior the trees start from is
    right in the same form for any prompt the classifier can read: the trees then learn only what
    the form cannot say. Only the oldest 70% of rows (the training slice) are used.
    """
    p_cols = x[:, _P_START:N_PROMPT]
    ratio = x[:, FEATURE_NAMES.index("steps_ratio")]
    penalty = np.where(ratio < 1.0, np.sqrt(1.0 / np.where(ratio > 0, ratio, 1.0)), 1.0)
    fix = np.array([_priors.SCENARIO_FIX_S[s] for s in SCENARIOS])
    out = dict(profiles)
    for code, name in enumerate(backends):
        sel = use & (row_backend == code) & ~np.isnan(correction)
        n = int(sel.sum())
        if n < _MIN_STRENGTH_ROWS:
            continue
        a = penalty[sel, None] * p_cols[sel] * fix
        y = correction[sel] - _priors.BASE_CORRECTION_S
        declared = profiles[name].strengths
        w0 = np.array([1.0 - declared.get(s, _priors.DEFAULT_STRENGTH) for s in SCENARIOS])
        design = np.column_stack([np.ones(n), a])
        # ridge towards the declared weaknesses (and a zero intercept), as strong as `prior_rows` rows
        # whose prompts are even odds for every scenario: a scale that does not shrink with how rare
        # a scenario is in this backend's rows (a rarely seen scenario must stay near its declared value)
        lam = prior_rows * np.concatenate([[1.0], (0.5 * fix) ** 2])
        target = np.concatenate([[0.0], w0])
        coef = np.linalg.solve(design.T @ design + np.diag(lam), design.T @ y + lam * target)
        weakness = np.clip(coef[1:], 0.0, 2.0)
        strengths = {s: round(float(1.0 - w), 4) for s, w in zip(SCENARIOS, weakness, strict=True)}
        out[name] = replace(profiles[name], strengths=strengths)
    return out


def _lgb_params(p: TrainParams) -> dict[str, Any]:
    return {"num_leaves": p.num_leaves, "max_depth": p.max_depth, "learning_rate": p.learning_rate,
            "min_data_in_leaf": p.min_data_in_leaf, "num_threads": p.num_threads, "verbosity": -1,
            "seed": p.seed, "deterministic": True, "force_col_wise": True, "max_bin": p.max_bin}


def _fit(objective: dict[str, Any], train: tuple[np.ndarray, ...], valid: tuple[np.ndarray, ...],
         p: TrainParams, callbacks: Sequence[Callable[[Any], None]] = ()) -> Any:
    """Fit one model; ``train``/``valid`` are ``(x, y, weight, init_score)`` (the prior, see module doc).

    One Dataset per model, binned on that model's rows. Binning all training rows once and taking
    per-model ``subset``s was tried: bin edges then come from other models' rows and the fitted models
    moved (routing cost on the test's fresh workload 0.632 -> 0.661, past the 3% cold-start bound in
    tests/test_router_training.py; ``min_data_in_leaf`` 100 -> 99 moves it as much), for a saving that
    was small next to boosting and to the shared box's noise (docs/benchmarks.md).
    """
    import lightgbm as lgb

    x, y, w, init = train
    xv, yv, wv, init_v = valid
    train_set = lgb.Dataset(x, y, weight=w, init_score=init, feature_name=list(FEATURE_NAMES), free_raw_data=True)
    valid_set = lgb.Dataset(xv, yv, weight=wv, init_score=init_v, reference=train_set)
    return lgb.train({**_lgb_params(p), **objective}, train_set, num_boost_round=p.num_boost_round,
                     valid_sets=[valid_set],
                     callbacks=[lgb.early_stopping(p.early_stopping_rounds, verbose=False), *callbacks])


def _round_reporter(report: Callable[[str, int, int], None], name: str) -> Callable[[Any], None]:
    """A LightGBM callback telling ``report`` each round of model ``name`` (its env carries the cap)."""
    return lambda env: report(name, env.iteration + 1, env.end_iteration)


def _fit_dask(params: dict[str, Any], train: tuple[np.ndarray, ...], p: TrainParams, client: Any) -> Any:
    """Train on a Dask cluster with ``lightgbm.dask`` (no early stopping there: the round count is fixed)."""
    import dask.array as da
    import lightgbm.dask as lgbd

    n_workers = max(1, len(client.scheduler_info()["workers"]))
    chunk = max(1, math.ceil(len(train[0]) / n_workers))
    dx, dy, dw, dinit = (da.from_array(a, chunks=(chunk,) + a.shape[1:]) for a in train)
    objective = params.pop("objective")
    cls = lgbd.DaskLGBMClassifier if objective == "binary" else lgbd.DaskLGBMRegressor
    params.pop("num_threads", None)
    model = cls(client=client, objective=objective, n_estimators=min(p.num_boost_round, 100), **params)
    model.fit(dx, dy, sample_weight=dw, init_score=dinit, feature_name=list(FEATURE_NAMES))
    return model.booster_


def _conformal_shift(scores: np.ndarray, level: float) -> float:
    """Split-conformal offset: the ceil((n+1) level)/n empirical quantile of the scores."""
    n = len(scores)
    q = min(1.0, math.ceil((n + 1) * level) / n)
    return float(np.quantile(scores, q, method="higher"))


def train(
    records: Iterable[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    profiles: Sequence[BackendProfile] = (),
    params: TrainParams | None = None,
    since: float | None = None,
    dask_scheduler: str | Any | None = None,
    progress: Callable[[str], None] | None = None,
    round_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Train the four models on ``records`` and write the artifact to ``out_dir``; returns the manifest.

    ``dask_scheduler`` is an address (``tcp://host:8786``) or a ``distributed.Client``. ``progress``
    hears a message per step; ``round_progress(model, rounds_done, round_cap)`` hears every boosting
    round (early stopping ends a model below the cap; on Dask it is called once, when a model is done).
    """
    p = params or TrainParams()
    say = progress or (lambda _msg: None)
    if isinstance(dask_scheduler, str):
        _require_dask()  # before the work of featurizing
    started = time.perf_counter()
    data = build_dataset(records, profiles, p, since, progress=lambda n: say(f"featurized {n:,} records"))
    if len(data) < 200:
        raise ValueError(f"training needs at least 200 usable records but got {len(data)} "
                         f"({data.skipped} skipped as malformed or without a prompt)")
    order = np.argsort(data.ts, kind="stable")
    n = len(order)
    i_tr, i_va, i_ca = order[: int(0.7 * n)], order[int(0.7 * n): int(0.85 * n)], order[int(0.85 * n):]
    half = len(i_ca) // 2
    i_fit, i_rep = i_ca[:half], i_ca[half:]
    client = _dask_client(dask_scheduler)
    boosters: dict[str, Any] = {}
    lat_log = np.log(np.maximum(data.latency, 1e-3))
    specs: list[tuple[str, dict[str, Any], np.ndarray]] = [
        ("latency_p50", {"objective": "quantile", "alpha": 0.5}, lat_log),
        ("latency_pq", {"objective": "quantile", "alpha": p.latency_quantile}, lat_log),
        ("p_fail", {"objective": "binary"}, data.failed),
        ("correction", {"objective": "regression"}, data.correction),
    ]
    init = init_scores(data.x, p.latency_quantile)
    try:
        for k, (name, objective, y) in enumerate(specs):
            ok = ~np.isnan(y)
            tr, va = i_tr[ok[i_tr]], i_va[ok[i_va]]
            if len(tr) < 50 or len(va) < 10:
                raise ValueError(f"not enough rows with a {name!r} target: {len(tr)} train / {len(va)} validation")
            say(f"training {name} on {len(tr):,} rows")
            train_rows = (data.x[tr], y[tr], data.weight[tr], init[tr, k])
            if client is not None:
                boosters[name] = _fit_dask({**_lgb_params(p), **objective}, train_rows, p, client)
                if round_progress is not None:
                    round_progress(name, boosters[name].current_iteration(), boosters[name].current_iteration())
            else:
                heard = () if round_progress is None else (_round_reporter(round_progress, name),)
                boosters[name] = _fit(objective, train_rows, (data.x[va], y[va], data.weight[va], init[va, k]), p,
                                      heard)
    finally:
        if client is not None and isinstance(dask_scheduler, str):
            client.close()  # a client we connected ourselves; a caller's Client stays theirs
    # every model's score on the held-out slice is the prior plus the trees' correction
    raw = {name: b.predict(data.x[i_ca], raw_score=True, num_threads=p.num_threads) + init[i_ca, k]
           for k, (name, b) in enumerate(boosters.items())}
    metrics, conformal = _calibrate(data, i_ca, half, lat_log, raw, p.latency_quantile)
    metrics["feature_importance"] = {name: feature_importance(b) for name, b in boosters.items()}
    version = f"lgbm-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "version": version,
        "feature_schema_hash": schema_hash(),
        "feature_names": list(FEATURE_NAMES),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_window": {"from": _iso(data.ts.min()), "to": _iso(data.ts.max())},
        "rows": {"total": n, "train": len(i_tr), "valid": len(i_va), "calibration": len(i_fit),
                 "report": len(i_rep), "correction_labelled": int((~np.isnan(data.correction)).sum()),
                 "skipped": data.skipped},
        "backends": data.backends,
        "backend_profiles": [_profile_dict(data.profiles[b]) for b in data.backends],
        "latency_quantile": p.latency_quantile,
        "conformal": conformal,
        "params": asdict(p),
        "trees": {name: b.num_trees() for name, b in boosters.items()},
        "metrics": metrics,
        "train_seconds": round(time.perf_counter() - started, 2),
        "init_score": "cold-start prior (pixelroute.router.models.init_scores)",
        "distributed": dask_scheduler is not None,
        "model_files": {name: f"{name}.{version}.txt" for name in MODEL_NAMES},
    }
    write_artifact(Path(out_dir), manifest, {name: b.model_to_string() for name, b in boosters.items()})
    say(f"wrote {out_dir} ({version}) in {manifest['train_seconds']} s")
    return manifest


#: features kept per model in the manifest's ``feature_importance`` (the rest are summed as ``(other)``)
TOP_FEATURES = 12


def feature_importance(booster: Any, top: int = TOP_FEATURES) -> dict[str, float]:
    """Each feature's share of a booster's total split gain, the ``top`` largest (the rest as ``(other)``)."""
    gain = np.asarray(booster.feature_importance(importance_type="gain"), dtype=float)
    total = float(gain.sum())
    if total <= 0:
        return {}
    order = np.argsort(-gain, kind="stable")
    names = booster.feature_name()
    out = {names[i]: round(float(gain[i]) / total, 4) for i in order[:top] if gain[i] > 0}
    rest = float(gain[order[top:]].sum()) / total
    if rest > 0:
        out["(other)"] = round(rest, 4)
    return out


def _dask_client(scheduler: Any) -> Any:
    if scheduler is None:
        return None
    if not isinstance(scheduler, str):
        return scheduler
    from distributed import Client

    return Client(scheduler)


def _require_dask() -> None:
    """lightgbm.dask needs all four. The router imports nothing from the rest of pixelroute, so it names
    the extra itself (keeping the module's name, which `pixelroute train` maps to the same extra)."""
    import importlib

    for module in ("distributed", "dask.array", "pandas", "sklearn"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"training on a Dask scheduler needs the optional `dask` extra ({exc.name} is not installed): "
                "pip install 'pixelroute[dask]'",
                name=exc.name,
            ) from exc


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), UTC).isoformat(timespec="seconds")


def _profile_dict(b: BackendProfile) -> dict[str, Any]:
    d = asdict(b)
    d["step_options"] = list(b.step_options)
    return d


def _calibrate(data: Dataset, i_ca: np.ndarray, half: int, lat_log: np.ndarray, raw: dict[str, np.ndarray],
               alpha: float) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Fit conformal offsets on the first half of the held-out slice; report on the second half."""
    conformal: dict[str, dict[str, float]] = {"p50": {}, "pq": {}}
    y = lat_log[i_ca]
    have = ~np.isnan(y)
    backends = data.backend[i_ca]
    fit = np.zeros(len(i_ca), dtype=bool)
    fit[:half] = True
    for key, level, pred in (("p50", 0.5, raw["latency_p50"]), ("pq", alpha, raw["latency_pq"])):
        scores = (y - pred)[have & fit]
        conformal[key]["*"] = _conformal_shift(scores, level) if len(scores) >= 20 else 0.0
        for b in data.backends:
            sel = have & fit & (backends == b)
            if sel.sum() >= 30:  # fewer rows: the pooled offset is the safer estimate
                conformal[key][b] = _conformal_shift((y - pred)[sel], level)
    rep = have & ~fit
    coverage: dict[str, dict[str, float]] = {}
    for b in [*data.backends, "*"]:
        sel = rep & ((backends == b) if b != "*" else True)
        if sel.sum() == 0:
            continue
        shift_q = np.array([conformal["pq"].get(bb, conformal["pq"]["*"]) for bb in backends[sel]])
        shift_50 = np.array([conformal["p50"].get(bb, conformal["p50"]["*"]) for bb in backends[sel]])
        coverage[b] = {"rows": int(sel.sum()),
                       "p50": float(np.mean(y[sel] <= raw["latency_p50"][sel] + shift_50)),
                       f"p{round(alpha * 100)}": float(np.mean(y[sel] <= raw["latency_pq"][sel] + shift_q))}
    f = data.failed[i_ca][~fit]
    pf = 1.0 / (1.0 + np.exp(-raw["p_fail"][~fit]))
    ok = ~np.isnan(f)
    f, pf = f[ok], pf[ok]
    bins = []
    edges = np.array([0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (pf >= lo) & (pf < hi if hi < 1 else pf <= hi)
        if sel.any():
            bins.append({"from": float(lo), "to": float(hi), "rows": int(sel.sum()),
                         "predicted": float(pf[sel].mean()), "observed": float(f[sel].mean())})
    c = data.correction[i_ca][~fit]
    pc = np.maximum(raw["correction"][~fit], 0.0)
    lab = ~np.isnan(c)
    train_mean = float(np.nanmean(data.correction))
    c_bins = []
    if lab.sum() >= 5:
        # five bins of equal size by predicted seconds: where the model is too high or too low
        order = np.argsort(pc[lab], kind="stable")
        for part in np.array_split(order, min(5, int(lab.sum()))):
            pred, obs = pc[lab][part], c[lab][part]
            c_bins.append({"rows": int(len(part)), "predicted_s": float(pred.mean()), "observed_s": float(obs.mean()),
                           "mae_s": float(np.mean(np.abs(pred - obs)))})
    metrics = {
        "latency_coverage": coverage,
        "failure": {"rows": int(len(f)), "brier": float(np.mean((pf - f) ** 2)) if len(f) else None,
                    "brier_base_rate": float(np.mean((f.mean() - f) ** 2)) if len(f) else None,
                    "reliability": bins},
        "correction": {"rows": int(lab.sum()),
                       "mae_s": float(np.mean(np.abs(pc[lab] - c[lab]))) if lab.any() else None,
                       "mae_constant_s": float(np.mean(np.abs(train_mean - c[lab]))) if lab.any() else None,
                       "by_predicted": c_bins},
    }
    return metrics, conformal


def write_artifact(out_dir: Path, manifest: dict[str, Any], model_texts: dict[str, str]) -> None:
    """Write atomically: a new directory appears whole; an existing one switches at the manifest rename.

    Records each model file's SHA-256 in ``manifest["model_sha256"]`` (and ``format_version``), so a
    reader verifies every byte before LightGBM parses it; ``manifest`` is updated in place.
    """
    files: dict[str, str] = manifest["model_files"]
    if set(model_texts) != set(files):
        raise ValueError(f"`model_texts` has models {sorted(model_texts)} but `model_files` names {sorted(files)}")
    for name, file_name in files.items():
        check_file_name(file_name, f"model_files.{name}", out_dir / MANIFEST)
    blobs = {name: text.encode("utf-8") for name, text in model_texts.items()}
    manifest["model_sha256"] = {name: sha256_hex(blob) for name, blob in blobs.items()}
    manifest["format_version"] = FORMAT_VERSION
    body = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    if not out_dir.exists():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = _make_dir(out_dir.parent / f".{out_dir.name}.")
        try:
            for name, blob in blobs.items():
                (tmp / files[name]).write_bytes(blob)
            (tmp / MANIFEST).write_bytes(body)
            os.rename(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    previous = _referenced_files(out_dir)
    for name, blob in blobs.items():
        _write_atomic(out_dir / files[name], blob)
    _write_atomic(out_dir / MANIFEST, body)
    # keep the previous version's files (a reader may be loading them right now); drop older ones
    keep = set(files.values()) | previous | {MANIFEST}
    for path in out_dir.glob("*.txt"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def _referenced_files(model_dir: Path) -> set[str]:
    """The file names the current manifest names; nothing when it is missing or damaged."""
    try:
        doc = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return set()
    files = doc.get("model_files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        return set()
    return {f for f in files.values() if isinstance(f, str)}


def _make_dir(prefix: Path) -> Path:
    """A fresh directory ``prefix<random>`` with the umask's permissions (``mkdtemp`` would make it 0700,
    and a gateway running as another user could not read what the trainer wrote)."""
    for _ in range(100):
        path = prefix.with_name(f"{prefix.name}{uuid.uuid4().hex[:12]}")
        try:
            path.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary directory name next to {str(prefix)!r}")


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename; the new file gets the umask's permissions
    (``mkstemp`` would make it 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"no free temporary file name next to {str(path)!r}")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
