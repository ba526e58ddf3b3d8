"""The learned router: features, prompt classifier, LightGBM models, SLA-constrained policy.

``pixelroute.router`` imports nothing from the rest of ``pixelroute``; lightgbm is imported only when a
trained model is loaded or trained, so importing this package stays light.
"""

from ._artifact import ArtifactError
from ._router import Router
from ._types import BackendProfile, BackendState, Candidate, Decision, RouteContext, RouteRequest, SLASpec
from .simulate import simulate
from .training import train

__all__ = [
    "ArtifactError",
    "BackendProfile",
    "BackendState",
    "Candidate",
    "Decision",
    "RouteContext",
    "RouteRequest",
    "Router",
    "SLASpec",
    "simulate",
    "train",
]
