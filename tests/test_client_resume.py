"""`client.resume(request_id)`: a remote job that finished after the client gave up is collected, not paid twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelroute import SLA, Client, DeadlineExceeded, PixelrouteError, UnknownRequest
from pixelroute._config import load_settings
from tests.fakeservers import FakeServer
from tests.fakeservers.providers import ReplicateJobs

CREATE = ("POST", "/v1/models/black-forest-labs/flux-schnell/predictions")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_token_0000")
    with FakeServer() as srv:
        yield srv


def test_timed_out_job_is_resumed_without_paying_again(server: FakeServer, tmp_path: Path) -> None:
    jobs = ReplicateJobs(server, polls_until_done=10_000)
    cfg = load_settings({
        "router": {"exploration": 0.0, "best_effort": True},
        "backends": [{"name": "flux", "kind": "replicate", "base_url": server.url, "on_abandon": "keep",
                      "allowed_download_hosts": ["127.0.0.1"], "allow_private_download_hosts": True,
                      "poll_interval_s": 0.02, "retry_base_s": 0.01}],
    })
    with Client(cfg, store=f"sqlite:///{tmp_path / 't.db'}") as client:
        with pytest.raises(DeadlineExceeded) as info:
            client.generate("a fox in snow", sla=SLA(deadline_s=0.4), backend="flux")
        client.recorder.flush()
        records = list(client._store.iter_records())
        assert len(records) == 1 and records[0]["outcome"]["job_id"]
        request_id = records[0]["request_id"]
        assert jobs.cancelled == []  # kept for resume, as configured
        assert isinstance(info.value, DeadlineExceeded)

        jobs.polls_until_done = 0  # the job finishes on the provider's side
        result = client.resume(request_id, sla=SLA(deadline_s=3))
        assert result.request_id == request_id and result.images
        assert result.trace["resumed_job"] == records[0]["outcome"]["job_id"]
        assert server.count(*CREATE) == 1  # collected, not generated (and billed) again

        stored = client.trace(request_id)
        assert [a["ok"] for a in stored["attempts"]] == [False, True]

        with pytest.raises(UnknownRequest):
            client.resume("01900000-0000-7000-8000-000000000000")


def test_nothing_to_resume_for_a_local_request(tmp_path: Path) -> None:
    from pixelroute import MockBackend

    with Client(load_settings({}), backends=[MockBackend("m")], store=f"sqlite:///{tmp_path / 'm.db'}") as client:
        r = client.generate("x")
        with pytest.raises(PixelrouteError, match="no remote job"):
            client.resume(r.request_id)
