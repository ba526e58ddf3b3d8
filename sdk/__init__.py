"""pixelroute: one ``generate()`` (and ``edit()``) over local diffusers pipelines and remote image APIs.

``import pixelroute`` stays light: torch, diffusers and lightgbm load only when a local backend or a
trained router model is first used.
"""

from ._client import AsyncClient, Client
from ._config import Settings, load_settings
from ._deadline import CancelToken, Deadline
from ._edit import EditRequest
from ._errors import (
    BackendError,
    BackendUnavailable,
    Cancelled,
    ConfigError,
    ContentRejected,
    DeadlineExceeded,
    InvalidOutput,
    MissingExtra,
    NoFeasibleBackend,
    PixelrouteError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    UnknownRequest,
    ValidationError,
)
from ._types import SLA, GenerateRequest, Result
from .backends.base import Backend, BackendOutput, Capabilities, MockBackend, Price

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Backend",
    "BackendError",
    "BackendOutput",
    "BackendUnavailable",
    "CancelToken",
    "Cancelled",
    "Capabilities",
    "Client",
    "ConfigError",
    "ContentRejected",
    "Deadline",
    "DeadlineExceeded",
    "EditRequest",
    "GenerateRequest",
    "InvalidOutput",
    "MissingExtra",
    "MockBackend",
    "NoFeasibleBackend",
    "PixelrouteError",
    "Price",
    "QuotaExceeded",
    "RateLimited",
    "Result",
    "SLA",
    "ServerError",
    "Settings",
    "UnknownRequest",
    "ValidationError",
    "load_settings",
]
