"""Replicate's job protocol against a local server: create -> poll -> result, cancel on abandonment,
resume of a job that finished after the caller gave up, and a create that is never sent twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pixelroute._deadline import CancelToken, Deadline
from pixelroute._errors import BackendError, Cancelled, ContentRejected, DeadlineExceeded, InvalidOutput, ServerError
from pixelroute._types import GenerateRequest
from pixelroute.backends import create_backend
from pixelroute.backends.replicate import ReplicateBackend, ReplicateSettings
from tests.fakeservers import FakeServer, Response, status
from tests.fakeservers.providers import ReplicateJobs

CREATE = ("POST", "/v1/models/black-forest-labs/flux-schnell/predictions")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_token_0000")
    with FakeServer() as srv:
        yield srv


def make(server: FakeServer, **settings: Any) -> ReplicateBackend:
    options: dict[str, Any] = dict(base_url=server.url, allowed_download_hosts=["127.0.0.1"],
                                   allow_private_download_hosts=True, poll_interval_s=0.02, retry_base_s=0.01)
    options.update(settings)
    be = create_backend(ReplicateSettings(name="flux", **options))
    assert isinstance(be, ReplicateBackend)
    return be


def run(be: ReplicateBackend, mode: str, deadline: Deadline, **knobs: Any) -> Any:
    request = GenerateRequest(prompt="a fox in snow", **knobs)

    async def go() -> Any:
        try:
            return await be.agenerate(request, deadline)
        finally:
            await be.aclose()

    try:
        return be.generate(request, deadline) if mode == "sync" else asyncio.run(go())
    except Exception as exc:  # returned so the test can inspect it
        return exc
    finally:
        be.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_create_poll_collect(server: FakeServer, mode: str) -> None:
    jobs = ReplicateJobs(server, polls_until_done=3)
    out = run(make(server), mode, Deadline(5), n=2)
    assert out.job_id == "job0001" and len(out.images) == 2
    assert jobs.jobs["job0001"]["polls"] == 3
    assert out.gpu_s == 1.21 and out.cost_usd == pytest.approx(2 * 0.003)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_abandoned_job_is_cancelled_and_its_id_kept(server: FakeServer, mode: str) -> None:
    jobs = ReplicateJobs(server, polls_until_done=10_000)
    start = time.monotonic()
    err = run(make(server), mode, Deadline(0.4))
    elapsed = time.monotonic() - start
    assert isinstance(err, DeadlineExceeded) and err.job_id == "job0001"  # type: ignore[attr-defined]
    assert jobs.cancelled == ["job0001"] and jobs.jobs["job0001"]["status"] == "canceled"
    assert elapsed <= 0.4 + 0.1
    assert server.count(*CREATE) == 1


def test_cancel_token_cancels_the_remote_job(server: FakeServer) -> None:
    jobs = ReplicateJobs(server, polls_until_done=10_000)
    token = CancelToken()
    be = make(server)
    polls = {"n": 0}

    def sleep(seconds: float) -> None:  # the caller cancels while the job is polled
        polls["n"] += 1
        if polls["n"] == 2:
            token.cancel()

    be._sleep = sleep
    err = run(be, "sync", Deadline(5, cancel=token))
    assert isinstance(err, Cancelled) and jobs.cancelled == ["job0001"]


def test_keep_then_resume_pays_once(server: FakeServer) -> None:
    jobs = ReplicateJobs(server, polls_until_done=10_000)
    be = make(server, on_abandon="keep")
    err = run(be, "sync", Deadline(0.3))
    assert isinstance(err, DeadlineExceeded) and jobs.cancelled == []
    job_id = err.job_id  # type: ignore[attr-defined]
    jobs.polls_until_done = 0  # the job finishes later, on the provider's side
    out = be.resume(job_id, Deadline(2))
    be.close()
    assert out.job_id == job_id and out.images[0].size == (8, 8)
    assert server.count(*CREATE) == 1  # collected, not generated (and billed) again

    async def aresume() -> Any:
        try:
            return await be.aresume(job_id, Deadline(2))
        finally:
            await be.aclose()

    assert asyncio.run(aresume()).job_id == job_id


def test_cancel_job_and_bad_ids(server: FakeServer) -> None:
    jobs = ReplicateJobs(server, polls_until_done=10_000)
    be = make(server, on_abandon="keep")
    run(be, "sync", Deadline(0.2))
    be.cancel_job("job0001")
    be.close()
    assert jobs.cancelled == ["job0001"]
    with pytest.raises(Exception, match="not a Replicate prediction id"):
        be.cancel_job("../../admin")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_create_is_never_retried(server: FakeServer, mode: str) -> None:
    ReplicateJobs(server)
    server.always(*CREATE, status(500, {"detail": "internal"}))
    err = run(make(server), mode, Deadline(2))
    assert isinstance(err, ServerError) and server.count(*CREATE) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_poll_errors_are_retried(server: FakeServer, mode: str) -> None:
    ReplicateJobs(server, polls_until_done=2)
    server.script("GET", "/v1/predictions/{id}", status(503))
    out = run(make(server), mode, Deadline(3))
    assert out.job_id == "job0001" and out.extra["retries"] == 1


@pytest.mark.parametrize(("error", "expected"), [("NSFW content detected. Try a different prompt.", ContentRejected),
                                                 ("CUDA error: device-side assert", BackendError)])
def test_failed_prediction(server: FakeServer, error: str, expected: type) -> None:
    jobs = ReplicateJobs(server, polls_until_done=1)

    def failed(req: Any) -> Any:
        job = jobs.jobs[req.params["id"]]
        job.update(status="failed", error=error)
        return Response(json=job)

    server.route("GET", "/v1/predictions/{id}", failed)
    err = run(make(server), "sync", Deadline(2))
    assert type(err) is expected and err.job_id == "job0001"  # type: ignore[attr-defined]
    assert server.count(*CREATE) == 1


def test_output_url_on_another_host_is_refused(server: FakeServer) -> None:
    jobs = ReplicateJobs(server, polls_until_done=0)
    jobs.image_path = "/files/out.png"
    err = run(make(server, allowed_download_hosts=["replicate.delivery"]), "sync", Deadline(2))
    assert isinstance(err, InvalidOutput) and "not on an allowed host" in str(err)
    assert server.count("GET", "/files/") == 0
