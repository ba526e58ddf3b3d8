"""The RQ recipe against the real Redis on 127.0.0.1:6379: enqueue from Flask, run a worker, give feedback."""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis")
rq = pytest.importorskip("rq")

from pixelroute import SLA, Client, ValidationError, load_settings  # noqa: E402
from pixelroute.contrib import rq as recipe  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "taskqueue_rq" / "web.py"


@pytest.fixture
def connection() -> Iterator[Any]:
    conn = redis.Redis.from_url("redis://127.0.0.1:6379/15", socket_connect_timeout=1)
    try:
        conn.ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis must run at 127.0.0.1:6379 under CI: {exc}")
        pytest.skip(f"no Redis at 127.0.0.1:6379: {exc}")
    yield conn
    conn.close()


@pytest.fixture
def queue(connection: Any) -> Iterator[Any]:
    q = recipe.make_queue(connection, f"pixelroute-test-{uuid.uuid4().hex[:8]}")
    yield q
    for job_id in q.job_ids:
        q.remove(job_id)
    q.delete(delete_jobs=True)


@pytest.fixture
def worker_client(tmp_path: Path) -> Iterator[Client]:
    settings = load_settings(
        {
            "telemetry": {"store": f"sqlite:///{tmp_path / 'worker.db'}"},
            "backends": [{"name": "m", "kind": "mock"}, {"name": "slow", "kind": "mock", "delay_s": 2.0}],
        }
    )
    client = recipe.configure_worker(settings)
    yield client
    recipe.close_worker()


def run_worker(queue: Any) -> None:
    from rq import SimpleWorker

    # SimpleWorker runs jobs in this process (no fork), the way `rq worker --worker-class` would
    SimpleWorker([queue], connection=queue.connection, serializer=queue.serializer).work(burst=True)


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("taskqueue_web", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_web_enqueues_worker_generates_request_id_flows_back(
    queue: Any, worker_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXAMPLE_API_KEY", "k")
    web = load_example().create_app(
        {
            "QUEUE_NAME": queue.name,
            "REDIS_URL": "redis://127.0.0.1:6379/15",
            # the web app and the worker share the telemetry store, as they would in production
            "PIXELROUTE_SETTINGS": {
                "telemetry": {"store": worker_client.settings.telemetry.store},
                "backends": [{"name": "m", "kind": "mock"}],
            },
        }
    )
    http = web.test_client()
    r = http.post(
        "/jobs", json={"prompt": "a red bicycle", "sla": {"deadline_s": 30}, "width": 64, "height": 64}
    )
    assert r.status_code == 202
    job_id = r.get_json()["job_id"]
    assert http.get(f"/jobs/{job_id}").get_json()["status"] == "queued"

    run_worker(queue)

    done = http.get(f"/jobs/{job_id}").get_json()
    assert done["status"] == "finished" and done["ok"] is True
    assert done["backend"] == "m" and len(done["data"]) == 1
    rid = done["request_id"]
    worker_client.recorder.flush()
    fb = http.post(
        f"/pixelroute/feedback/{rid}", json={"seconds": 20, "verdict": "edited"}, headers={"X-Key": "k"}
    )
    assert fb.status_code == 200, fb.get_json()
    assert worker_client.trace(rid)["correction"]["verdict"] == "edited"
    from pixelroute.contrib.flask import get_state

    get_state(web).close()


def test_bad_input_is_refused_before_the_queue(queue: Any) -> None:
    with pytest.raises(ValidationError, match="steps"):
        recipe.enqueue_generate(queue, "x", steps=0)
    with pytest.raises(ValidationError, match="deadline_s"):
        recipe.enqueue_generate(queue, "x", sla={"deadline_s": -1})
    assert queue.count == 0


def test_queue_wait_counts_against_the_deadline(queue: Any, worker_client: Client) -> None:
    job = queue.enqueue_call(
        "pixelroute.contrib.rq.generate_job",
        kwargs={
            "prompt": "x",
            "sla": SLA(deadline_s=5).model_dump(),
            "backend": None,
            "knobs": {},
            "submitted_at": 0.0,
        },  # enqueued long ago
    )
    run_worker(queue)
    out = recipe.job_result(queue, job.id)
    assert out["status"] == "finished"
    assert (out["ok"], out["http_status"], out["error"]["code"]) == (False, 504, "timeout")
    assert worker_client.backends["m"].calls == 0  # nothing generated, nothing paid


def test_failed_generation_is_a_result_with_the_http_error_body(queue: Any, worker_client: Client) -> None:
    job = recipe.enqueue_generate(queue, "x", sla={"deadline_s": 0.2}, backend="slow")
    run_worker(queue)
    out = recipe.job_result(queue, job.id)
    assert out["ok"] is False
    assert (out["status"], out["error"]["code"]) == ("finished", "timeout")


def test_an_unknown_job_id_is_404_not_a_gateway_error(queue: Any) -> None:
    with pytest.raises(recipe.UnknownJob, match="no job with id `'nope'`"):
        recipe.job_result(queue, "nope")
    web = load_example().create_app(
        {
            "QUEUE_NAME": queue.name,
            "REDIS_URL": "redis://127.0.0.1:6379/15",
            "PIXELROUTE_SETTINGS": {"backends": [{"name": "m", "kind": "mock"}]},
        }
    )
    r = web.test_client().get("/jobs/nope")
    assert r.status_code == 404
    assert r.get_json()["error"] == {
        "message": "no job with id `'nope'` (unknown, or its result expired)",
        "type": "not_found_error",
        "param": "job_id",
        "code": "unknown_job",
    }


def write_mock_config(tmp_path: Path) -> tuple[Path, str]:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    config = tmp_path / "pixelroute.toml"
    config.write_text(f'[telemetry]\nstore = "{store}"\n\n[[backends]]\nname = "from-env"\nkind = "mock"\n')
    return config, store


def job_with_config_in(variable: str, queue: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The result of one job run by a worker whose config path is in the environment variable named."""
    config, _ = write_mock_config(tmp_path)
    monkeypatch.setenv(variable, str(config))
    recipe.close_worker()  # the next job builds the worker's client from the environment
    try:
        job = recipe.enqueue_generate(queue, "x", sla={"deadline_s": 30}, width=64, height=64)
        run_worker(queue)
        return recipe.job_result(queue, job.id)
    finally:
        recipe.close_worker()


def test_the_worker_reads_its_config_from_pixelroute_config(
    queue: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = job_with_config_in("PIXELROUTE_CONFIG", queue, tmp_path, monkeypatch)
    assert (out["ok"], out["backend"]) == (True, "from-env")


def test_the_old_variable_name_is_refused_not_silently_ignored(
    queue: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = job_with_config_in("PIXELROUTE_WORKER_CONFIG", queue, tmp_path, monkeypatch)
    assert (out["ok"], out["http_status"], out["error"]["code"]) == (False, 500, "config")
    assert "`PIXELROUTE_WORKER_CONFIG` is no longer read" in out["error"]["message"]
    assert "`PIXELROUTE_CONFIG`" in out["error"]["message"]


def test_a_forking_worker_writes_the_jobs_telemetry_before_its_process_ends(
    queue: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rq import Worker

    config, store = write_mock_config(tmp_path)
    monkeypatch.setenv("PIXELROUTE_CONFIG", str(config))
    recipe.close_worker()  # the forked work horse builds its own client from the environment
    job = recipe.enqueue_generate(queue, "x", sla={"deadline_s": 30}, width=64, height=64)
    # RQ's default worker: each job in a forked process that ends with os._exit(), no atexit
    Worker([queue], connection=queue.connection, serializer=queue.serializer).work(burst=True)
    out = recipe.job_result(queue, job.id)
    assert out["ok"] is True, out
    with Client(load_settings({"telemetry": {"store": store}, "backends": [{"name": "m", "kind": "mock"}]})) as c:
        assert c.trace(out["request_id"])["backend"] == "from-env"
