"""A Flask app with the pixelroute extension: an app factory, an API-key auth hook, one page.

    cd examples/flask_app
    EXAMPLE_API_KEY=secret flask --app app:create_app run                        # development, on :5000
    EXAMPLE_API_KEY=secret gunicorn -w 2 -b 127.0.0.1:5000 'app:create_app()'    # or production

    curl -XPOST localhost:5000/pixelroute/generate -H 'X-Key: secret' -H 'Content-Type: application/json' \\
        -H 'Accept: image/png' -d '{"prompt": "a red bicycle", "width": 64, "height": 64}' -o bike.png
    curl -XPOST localhost:5000/poster -H 'X-Key: secret' -H 'Content-Type: application/json' -d '{"title": "SALE"}'

With `PIXELROUTE_CONFIG=path/to/pixelroute.toml` in the environment (`pixelroute init` writes one)
it serves that config; without, the embedded default (tiny pipelines with RANDOM weights, so the
images are noise).
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Flask, request

from pixelroute.contrib.flask import Pixelroute

pixelroute = Pixelroute()


def api_key_auth(req: Any, action: str) -> bool:
    """Everyone with the key may do everything; a real app would check its own users and roles."""
    expected = os.environ.get("EXAMPLE_API_KEY", "")
    given = req.headers.get("X-Key", "")
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    if os.environ.get("PIXELROUTE_CONFIG"):
        app.config["PIXELROUTE_CONFIG"] = os.environ["PIXELROUTE_CONFIG"]
    app.config.update(config or {})
    pixelroute.init_app(app, auth=api_key_auth)

    @app.get("/")
    def index() -> str:
        return "POST /pixelroute/generate with X-Key; see the module docstring."

    @app.post("/poster")
    def poster() -> Any:
        """An app endpoint that uses the client directly, with its own SLA."""
        if not api_key_auth(request, "generate"):
            return {"error": "forbidden"}, 403
        title = str((request.get_json(silent=True) or {}).get("title", "OPEN"))
        result = pixelroute.client.generate(
            f'a poster that says "{title}"', sla={"deadline_s": 60}, width=64, height=64
        )
        return {"request_id": result.request_id, "backend": result.backend, "cost_usd": result.cost_usd}

    return app


if __name__ == "__main__":
    create_app().run(port=5000)
