"""A Flask app that hands generations to RQ workers and reports feedback against the request id.

Run it from its folder with a Redis at 127.0.0.1:6379 (`redis-server`). The web app and the
workers read the same config (`PIXELROUTE_CONFIG`), so they share one telemetry store and the
feedback endpoint finds the requests the workers ran:

    cd examples/taskqueue_rq
    pixelroute init                     # pixelroute.toml: tiny local pipelines, telemetry in ./pixelroute.db
    export PIXELROUTE_CONFIG=pixelroute.toml REDIS_URL=redis://127.0.0.1:6379/0 EXAMPLE_API_KEY=secret
    rq worker pixelroute --url "$REDIS_URL" --worker-class rq.SimpleWorker \\
        --serializer rq.serializers.JSONSerializer &
    flask --app web:create_app run &

    curl -XPOST localhost:5000/jobs -H 'Content-Type: application/json' \\
        -d '{"prompt": "a red bicycle", "width": 64, "height": 64}'      # -> 202 {"job_id": ...}
    curl localhost:5000/jobs/<job_id>          # -> status; once finished: request_id, backend, images
    curl -XPOST localhost:5000/pixelroute/feedback/<request_id> -H 'X-Key: secret' \\
        -H 'Content-Type: application/json' -d '{"seconds": 30, "verdict": "edited"}'

`rq.SimpleWorker` runs jobs in the worker's own process, so its client and loaded pipelines
serve job after job; RQ's default worker forks a process per job and would load the pipeline
for each one. A config that keeps a `mock` backend next to real ones is warned about at start:
the router would send it most jobs.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Flask, jsonify, request
from redis import Redis

from pixelroute import PixelrouteError, ValidationError
from pixelroute.contrib._http import error_response
from pixelroute.contrib.flask import Pixelroute
from pixelroute.contrib.rq import enqueue_generate, job_result, make_queue

pixelroute = Pixelroute()


def api_key_auth(req: Any, action: str) -> bool:
    expected = os.environ.get("EXAMPLE_API_KEY", "")
    given = req.headers.get("X-Key", "")
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())  # constant time


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    if os.environ.get("PIXELROUTE_CONFIG"):  # the workers' config: one telemetry store for both
        app.config["PIXELROUTE_CONFIG"] = os.environ["PIXELROUTE_CONFIG"]
    app.config["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    app.config.update(config or {})
    pixelroute.init_app(app, auth=api_key_auth)  # feedback/trace endpoints under /pixelroute
    redis_url = app.config["REDIS_URL"]
    queue = make_queue(Redis.from_url(redis_url), app.config.get("QUEUE_NAME", "pixelroute"))

    @app.post("/jobs")
    def submit() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            raise ValidationError("`prompt` must be a string in a JSON object", field="prompt", value=body)
        prompt = body.pop("prompt")
        job = enqueue_generate(queue, prompt, **body)  # validated here; the web worker returns at once
        return jsonify({"job_id": job.id, "status": "queued"}), 202

    @app.get("/jobs/<job_id>")
    def status(job_id: str) -> Any:
        return jsonify(job_result(queue, job_id))

    @app.errorhandler(PixelrouteError)
    def on_error(exc: PixelrouteError) -> Any:
        code, body, headers = error_response(exc)
        return jsonify(body), code, headers

    return app
