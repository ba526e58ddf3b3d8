"""Cold-start predictions: no telemetry yet, only profiles, presets and the prompt classifier.

Correction time is the hybrid rule in numbers (:func:`router._priors.prior_correction_s`):

    BASE_CORRECTION_S + sum over scenarios of P(scenario | prompt) x (1 - strength) x SCENARIO_FIX_S

so a simple stylistic prompt costs about the same correction everywhere (and the fast, cheap
path wins on price), while a typography or dense multi-object prompt makes a weak backend's
correction time dominate the cost (and the high-fidelity path wins). The fix times are
assumptions of how long a person spends repairing each defect (redoing text in an editor is the
slowest); logged corrections replace them once a model is trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _priors
from ._types import BackendProfile, RouteContext, RouteRequest
from .features import SCENARIOS, scenario_probabilities
from .policy import Predictions

#: latency spread added per queued request ahead (local) and per in-flight request (remote)
_QUEUE_FACTOR_LOCAL = 1.0
_INFLIGHT_FACTOR_REMOTE = 0.03


def option_priors(request: RouteRequest, options: Sequence[tuple[BackendProfile, int | None]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Prior median latency (no queue) and price per option; shared by both predictors."""
    lat = np.empty(len(options))
    price = np.empty(len(options))
    for i, (profile, option) in enumerate(options):
        steps = _priors.effective_steps(profile, request.steps, option)
        mp = _priors.megapixels(profile, request.width, request.height)
        lat[i] = _priors.prior_latency_s(profile, mp, steps, request.n)
        price[i] = _priors.price_usd(profile, mp, request.n, lat[i])
    return lat, price


class ColdStartPredictor:
    """Predictions from priors alone (see the module docstring)."""

    name = "cold_start"
    version = "cold-start"

    def predict(self, request: RouteRequest, options: Sequence[tuple[BackendProfile, int | None]],
                context: RouteContext, priors: tuple[np.ndarray, np.ndarray] | None = None) -> Predictions:
        lat, price = priors or option_priors(request, options)
        probs = scenario_probabilities(request.prompt)
        scenario_p = [probs[s] for s in SCENARIOS]
        n = len(options)
        p50, sigma, p_fail, corr = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        for i, (profile, option) in enumerate(options):
            preset = _priors.preset(profile)
            state = context.get(profile.name)
            if profile.local:  # one GPU: each queued request ahead runs first
                p50[i] = lat[i] * (1.0 + _QUEUE_FACTOR_LOCAL * (state.queue_depth + state.in_flight))
            else:
                p50[i] = lat[i] * (1.0 + _INFLIGHT_FACTOR_REMOTE * state.in_flight)
            sigma[i] = preset.sigma
            prior_fail = profile.typical_failure_rate if profile.typical_failure_rate is not None \
                else preset.failure_rate
            # recent failures are evidence: average them with the prior once the breaker saw any
            fail = 0.5 * (prior_fail + state.recent_failure_rate) if state.recent_failure_rate else prior_fail
            p_fail[i] = min(0.99, fail + (0.1 if state.breaker == "half_open" else 0.0))
            steps = _priors.effective_steps(profile, request.steps, option)
            corr[i] = _priors.prior_correction_s(profile, scenario_p, steps)
        return Predictions(p50, sigma, p_fail, corr, price)
