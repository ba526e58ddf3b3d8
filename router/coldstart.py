"""Cold-start predictions: no telemetry yet, only profiles, presets and the prompt classifier.

Correction time is the hybrid rule in numbers (:func:`pixelroute.router._priors.prior_correction_s`):

    BASE_CORRECTION_S + sum over scenarios of P(scenario | prompt) x (1 - strength) x SCENARIO_FIX_S

so a simple stylistic prompt costs about the same correction everywhere (and the fast, cheap
path wins on price), while a typography or dense multi-object prompt makes a weak backend's
correction time dominate the cost (and the high-fidelity path wins). The fix times are
assumptions of how long a person spends repairing each defect (redoing text in an editor is the
slowest); logged corrections replace them once a model is trained.

The numbers themselves are computed by the featurizer (:data:`pixelroute.router.features.PRIOR_FEATURES`):
the trained models start from exactly these columns, so cold start and trained share one path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._types import BackendProfile, RouteContext, RouteRequest
from .features import (
    COL_PRIOR_CORRECTION,
    COL_PRIOR_LOG_P50,
    COL_PRIOR_LOGIT_FAIL,
    COL_PRIOR_SIGMA,
    COL_RECENT_LOG_RATIO,
    featurize,
)
from .policy import Predictions


def prior_predictions(rows: np.ndarray, price: np.ndarray) -> Predictions:
    """The cold-start predictions held in feature rows' prior columns."""
    return Predictions(
        latency_p50_s=np.exp(rows[:, COL_PRIOR_LOG_P50]),
        latency_sigma=rows[:, COL_PRIOR_SIGMA].copy(),
        p_fail=1.0 / (1.0 + np.exp(-rows[:, COL_PRIOR_LOGIT_FAIL])),
        correction_s=rows[:, COL_PRIOR_CORRECTION].copy(),
        price_usd=price,
        reference_latency_s=reference_latency(rows),
    )


def reference_latency(rows: np.ndarray) -> np.ndarray:
    """The prior's median before the recent-latency correction: what an observed latency is divided by
    to keep a backend's ``recent_latency_ratio`` (never a trained prediction, which would feed back)."""
    out: np.ndarray = np.exp(rows[:, COL_PRIOR_LOG_P50] - rows[:, COL_RECENT_LOG_RATIO])
    return out


class ColdStartPredictor:
    """Predictions from priors alone (see the module docstring)."""

    name = "cold_start"
    version = "cold-start"

    def predict(self, request: RouteRequest, options: Sequence[tuple[BackendProfile, int | None]],
                context: RouteContext) -> Predictions:
        rows, price = featurize(request, options, context)
        return prior_predictions(rows, price)
