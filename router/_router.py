"""The :class:`Router`: a predictor (cold start or trained) plus the shared decision rule."""

from __future__ import annotations

import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ._artifact import MANIFEST, ArtifactError, artifact_fingerprint, stat_key
from ._types import BackendProfile, Decision, RouteContext, RouteRequest, SLASpec
from .coldstart import ColdStartPredictor
from .models import load_predictor
from .policy import PolicyConfig, Predictions, decide, expand_options

log = logging.getLogger("pixelroute.router")
#: ``maybe_reload`` looks at the manifest at most this often
RELOAD_CHECK_S = 1.0


class Predictor(Protocol):
    name: str
    version: str

    def predict(self, request: RouteRequest, options: Sequence[tuple[BackendProfile, int | None]],
                context: RouteContext) -> Predictions: ...


class Router:
    """Pick a backend per request inside the SLA at the lowest expected total cost.

    Usage::

        r = Router.cold_start()                      # priors from profiles + the prompt classifier
        r = Router.load("router-model")              # a trained artifact (docs/retraining.md)
        d = r.decide(RouteRequest("a red bicycle"), SLASpec(deadline_s=8), backends, RouteContext())
        d.backend, d.fallbacks, d.candidates, d.propensity
        r.maybe_reload()                             # cheap; picks up a newly written artifact
    """

    def __init__(self, predictor: Predictor, config: PolicyConfig, *, seed: int | None = None,
                 model_dir: Path | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.predictor = predictor
        self.config = config
        self.model_dir = model_dir
        self._rng = np.random.default_rng(seed)
        self._clock = clock
        self._last_check = clock()
        self._manifest_key = stat_key(model_dir / MANIFEST) if model_dir else None
        #: the artifact's fingerprint when a reload last failed: not tried (nor logged) again until it changes
        self._failed_fingerprint: tuple[Any, ...] | None = None
        self._reload_lock = threading.Lock()
        #: ids of a backends list -> (those profiles, their options): the same options list for the same
        #: profiles lets the predictor find its cached plan by identity instead of hashing every option
        self._options: dict[tuple[int, ...], tuple[list[BackendProfile], list[tuple[BackendProfile, int | None]]]] = {}

    @classmethod
    def cold_start(cls, correction_cost_per_hour: float = 60.0, exploration: float = 0.02,
                   sla_confidence: float = 0.95, best_effort: bool = True, seed: int | None = None) -> Router:
        """A router without a trained artifact: the backends' declared priors and the prompt classifier."""
        config = PolicyConfig(correction_cost_per_hour, exploration, sla_confidence, best_effort)
        return cls(ColdStartPredictor(), config, seed=seed)

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], correction_cost_per_hour: float = 60.0,
             exploration: float = 0.02, sla_confidence: float = 0.95, best_effort: bool = True,
             seed: int | None = None, clock: Callable[[], float] = time.monotonic) -> Router:
        """Load an artifact; an :class:`~pixelroute.router.ArtifactError` (a ``ValueError``) names the file at fault.

        Refused: a missing or garbled manifest, a wrong type or missing key in it, an older
        format version, a schema-hash mismatch, a model file outside the directory, a model file
        whose SHA-256 differs from the manifest's, text LightGBM cannot parse safely.
        """
        path = Path(model_dir)
        config = PolicyConfig(correction_cost_per_hour, exploration, sla_confidence, best_effort)
        return cls(load_predictor(path), config, seed=seed, model_dir=path, clock=clock)

    @staticmethod
    def artifact_fingerprint(model_dir: str | os.PathLike[str]) -> tuple[Any, ...] | None:
        """The stat keys of an artifact's manifest and files (``None`` without a manifest); cheap.

        A watcher that failed to load an artifact retries once this changes, not every time it looks.
        """
        return artifact_fingerprint(model_dir)

    @property
    def version(self) -> str:
        return self.predictor.version

    @property
    def policy_name(self) -> str:
        return self.predictor.name

    def decide(self, request: RouteRequest, sla: SLASpec, backends: Sequence[BackendProfile],
               context: RouteContext | None = None) -> Decision:
        """Choose among ``backends`` for ``request`` within ``sla``; ``context`` is their live state."""
        ctx = context or RouteContext()
        options = self._options_for(backends)
        preds = self.predictor.predict(request, options, ctx)
        return decide(options, preds, sla, ctx, self.config, self._rng,
                      policy_name=self.policy_name, router_version=self.version, operation=request.operation)

    def _options_for(self, backends: Sequence[BackendProfile]) -> list[tuple[BackendProfile, int | None]]:
        key = tuple(map(id, backends))
        hit = self._options.get(key)
        # the entry keeps its profiles alive, so their ids cannot be reused while it exists
        if hit is not None and all(map(operator.is_, hit[0], backends)):
            return hit[1]
        if len(self._options) >= 256:
            self._options.clear()
        options = expand_options(backends)
        self._options[key] = (list(backends), options)
        return options

    def predict(self, request: RouteRequest, backends: Sequence[BackendProfile],
                context: RouteContext | None = None) -> tuple[list[tuple[BackendProfile, int | None]], Predictions]:
        """Raw predictions per option (for evaluation and reports)."""
        options = expand_options(backends)
        return options, self.predictor.predict(request, options, context or RouteContext())

    def maybe_reload(self) -> bool:
        """Reload the artifact if its manifest changed on disk; at most one ``stat`` per second.

        A broken or half-written artifact never replaces a working one: the current model stays in
        use and the problem is logged once; it is tried again only when the manifest or a file in
        the directory changes (model files copied in after their manifest still get picked up).
        """
        if self.model_dir is None:
            return False
        now = self._clock()
        if now - self._last_check < RELOAD_CHECK_S:
            return False
        self._last_check = now
        key = stat_key(self.model_dir / MANIFEST)
        if key is None or key == self._manifest_key:
            return False
        if not self._reload_lock.acquire(blocking=False):
            return False  # another request is loading it right now
        try:
            fingerprint = artifact_fingerprint(self.model_dir)
            if fingerprint is not None and fingerprint == self._failed_fingerprint:
                return False
            try:
                predictor = load_predictor(self.model_dir)
            except Exception as exc:  # whatever is wrong on disk, requests keep the model they have
                self._failed_fingerprint = fingerprint
                detail = str(exc) if isinstance(exc, ArtifactError) else f"{type(exc).__name__}: {exc}"
                log.warning("router model in %s changed but cannot be loaded, keeping %s until it changes "
                            "again: %s", self.model_dir, self.version, detail)
                return False
            self.predictor = predictor
            self._manifest_key = key
            self._failed_fingerprint = None
        finally:
            self._reload_lock.release()
        log.info("router reloaded model %s from %s", self.version, self.model_dir)
        return True
