"""Collect a remote result that finished after the client gave up on it.

Async-job protocols (Replicate-style) record the provider's job id with every attempt. When an
attempt timed out, the job may still finish, and it is paid for: ``client.resume(request_id)``
finds the newest attempt with a job id and asks its backend for the finished result instead of
paying for a new generation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._deadline import Deadline
from ._errors import PixelrouteError, UnknownRequest
from ._types import SLA, Result

if TYPE_CHECKING:
    from ._client import BaseClient


def resume_sync(client: BaseClient, request_id: str, sla: SLA) -> Result:
    if client._store is None:
        raise PixelrouteError("telemetry is disabled: job ids are not kept, nothing can be resumed")
    client._flush_for_read()
    records = client._store.records_for(request_id)
    if not records:
        raise UnknownRequest(request_id)
    for rec in reversed(records):
        outcome = rec.get("outcome") or {}
        job_id = outcome.get("job_id")
        name = rec.get("backend")
        if not job_id or name not in client.backends:
            continue
        backend = client.backends[name]
        clock = client._clock
        started = clock()
        output = backend.resume(job_id, Deadline(sla.deadline_s, clock=clock))
        latency = clock() - started
        cost = float(outcome.get("cost_usd") or 0.0)  # already paid by the original attempt
        resumed: dict[str, Any] = dict(rec)
        resumed["attempt"] = max(int(r.get("attempt", 0)) for r in records) + 1
        now = datetime.now(UTC)
        resumed["ts"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        resumed["outcome"] = {**outcome, "ok": True, "error": None, "latency_s": round(latency, 6),
                              "resumed": True, "cost_usd": 0.0}
        resumed.pop("correction", None)
        client.recorder.record(resumed)
        return Result(
            images=output.images,
            request_id=request_id,
            backend=name,
            latency_s=latency,
            cost_usd=cost,
            gpu_s=output.gpu_s,
            trace={"request_id": request_id, "resumed_job": job_id, "backend": name},
        )
    raise PixelrouteError(f"request `{request_id}` has no remote job that can be resumed")
