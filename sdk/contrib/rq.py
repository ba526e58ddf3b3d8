"""Run ``generate()`` in RQ workers, so a long generation never holds a web worker.

The web process enqueues and answers at once with the job id; a worker process runs the
generation; the web process reads the job's result, which carries the ``request_id`` that the
user's feedback is later reported against::

    # web process
    from redis import Redis
    from pixelroute.contrib.rq import enqueue_generate, job_result, make_queue
    queue = make_queue(Redis())
    job = enqueue_generate(queue, "a red bicycle", sla={"deadline_s": 60}, seed=7)   # -> 202 + job.id
    ...
    job_result(queue, job.id)   # {"status": "finished", "ok": True, "request_id": ..., "data": [...]}

    # worker process (any number of them), with the web process's config, so both use one telemetry store
    PIXELROUTE_CONFIG=pixelroute.toml rq worker pixelroute --serializer rq.serializers.JSONSerializer

Jobs and results travel as JSON (``JSONSerializer``), never pickles. The SLA deadline counts
from the moment the web process enqueued: time spent waiting in the queue is spent, and a job
whose deadline has passed fails as ``timeout`` without generating. A failed generation is a
result (``ok: false`` with the same error body the HTTP endpoints return), not a crashed job.
A job id Redis does not hold raises :class:`UnknownJob`, which the HTTP error mapping answers 404.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError, DeadlineExceeded, PixelrouteError
from .._shown import shown
from ..telemetry._recorder import flush_before_read
from . import _http

if TYPE_CHECKING:
    from rq import Queue

    from .._client import Client, ConfigSource

QUEUE_NAME = "pixelroute"
#: the config file's path; the same variable the examples' web apps and retrain_cron.sh read
CONFIG_ENV = "PIXELROUTE_CONFIG"
#: the name this variable had before; refused (not ignored) so a worker never silently runs without its config
_OLD_CONFIG_ENV = "PIXELROUTE_WORKER_CONFIG"
#: seconds a worker may spend beyond the SLA deadline before RQ kills the job
JOB_TIMEOUT_MARGIN_S = 30

_lock = threading.Lock()
_client: Client | None = None


class UnknownJob(_http.HTTPError):
    """Raised by :func:`job_result` for a job id that Redis does not hold (never enqueued, or expired)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            404,
            f"no job with id {shown(job_id)} (unknown, or its result expired)",
            type_="not_found_error",
            code="unknown_job",
            param="job_id",
        )
        self.job_id = job_id


def make_queue(connection: Any, name: str = QUEUE_NAME) -> Queue:
    """An RQ queue that moves jobs and results as JSON."""
    from .._extras import optional_imports

    with optional_imports("pixelroute.contrib.rq"):
        from rq import Queue
        from rq.serializers import JSONSerializer

    return Queue(name, connection=connection, serializer=JSONSerializer)


def enqueue_generate(
    queue: Queue,
    prompt: str,
    *,
    sla: dict[str, Any] | None = None,
    backend: str | None = None,
    result_ttl_s: int = 3600,
    **knobs: Any,
) -> Any:
    """Validate in the web process (bad input never reaches the queue), then enqueue the job."""
    from .._types import build_request, build_sla

    build_request(prompt=prompt, **knobs)
    checked = build_sla(sla)
    deadline = checked.deadline_s
    return queue.enqueue_call(
        "pixelroute.contrib.rq.generate_job",
        kwargs={
            "prompt": prompt,
            "sla": checked.model_dump(),
            "backend": backend,
            "knobs": knobs,
            "submitted_at": time.time(),
        },
        timeout=int(deadline + JOB_TIMEOUT_MARGIN_S) if deadline else None,
        result_ttl=result_ttl_s,
    )


def configure_worker(config: ConfigSource = None, **client_kwargs: Any) -> Client:
    """Build this worker's client now; else the first job builds it from ``$PIXELROUTE_CONFIG``."""
    global _client
    from .._client import Client

    with _lock:
        old, _client = _client, Client(config, **client_kwargs)
    if old is not None:
        old.close()
    return _client


def worker_client() -> Client:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                import atexit

                from .._client import Client

                _client = Client(_config_from_env())
                atexit.register(_client.close)
    return _client


def _config_from_env() -> str | None:
    if os.environ.get(_OLD_CONFIG_ENV) is not None:
        raise ConfigError(
            f"`{_OLD_CONFIG_ENV}` is no longer read: name the config file with `{CONFIG_ENV}` "
            "(the web app, the workers and the retraining job read the same variable)"
        )
    return os.environ.get(CONFIG_ENV) or None


def close_worker() -> None:
    """Close the worker's client (flushes telemetry)."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def generate_job(
    prompt: str, sla: dict[str, Any], backend: str | None, knobs: dict[str, Any], submitted_at: float
) -> dict[str, Any]:
    """The job body run by the worker; returns a JSON-able result (see the module docstring)."""
    sla = dict(sla)
    try:
        if sla.get("deadline_s") is not None:
            left = float(sla["deadline_s"]) - max(0.0, time.time() - submitted_at)
            if left <= 0:
                raise DeadlineExceeded(f"the job waited in the queue past its {sla['deadline_s']} s deadline")
            sla["deadline_s"] = left
        client = worker_client()
        try:
            result = client.generate(prompt, sla=sla, backend=backend, **knobs)
        finally:
            # Written before the job reports its request id: feedback on it must find the record,
            # and RQ's default worker ends each job's forked process with os._exit(), which would
            # lose what the telemetry writer still held in memory.
            flush_before_read(client.recorder)
    except PixelrouteError as exc:
        status, body, _ = _http.error_response(exc)
        return {"ok": False, "http_status": status, **body}
    return {"ok": True, **_http.result_json(result)}


def job_result(queue: Queue, job_id: str) -> dict[str, Any]:
    """``{"status": "queued" | "started" | "finished" | "failed" | ..., **result}`` for the web app."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    except NoSuchJobError:
        raise UnknownJob(job_id) from None
    status = str(job.get_status(refresh=True).value)
    out: dict[str, Any] = {"status": status, "job_id": job_id}
    if status == "finished":
        out.update(job.return_value() or {})
    elif status == "failed":
        out.update(
            {
                "ok": False,
                "error": {
                    "message": "the worker failed to run the job",
                    "type": "server_error",
                    "param": None,
                    "code": "job_failed",
                },
            }
        )
    return out


__all__ = [
    "UnknownJob",
    "close_worker",
    "configure_worker",
    "enqueue_generate",
    "generate_job",
    "job_result",
    "make_queue",
]
