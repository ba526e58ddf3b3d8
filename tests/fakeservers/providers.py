"""Provider-shaped routes for :class:`FakeServer`, following each API's documented format.

``install_<kind>(server)`` adds the routes one backend kind needs and returns the main route
``(method, path)`` that fault scripts target. Also: test images, including a truncated PNG and
a 20000x20000 decompression bomb whose header is crafted (no 400M-pixel allocation).
"""

from __future__ import annotations

import base64
import io
import itertools
import struct
import threading
import time
import zlib
from typing import Any

from PIL import Image

from ._server import FakeServer, Recorded, Response


def png_bytes(width: int = 8, height: int = 8, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def truncated_png() -> bytes:
    data = png_bytes(64, 64, (10, 200, 90))
    return data[: len(data) // 2]


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header claiming ``width``x``height``; its pixels are never produced."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PNG = png_bytes()
B64_PNG = base64.b64encode(PNG).decode()


def serve_image(server: FakeServer, data: bytes = PNG) -> str:
    """Serve ``data`` at ``/files/...`` and return its path (result URLs point here)."""
    server.route("GET", "/files/{name}", lambda req: Response(body=data, content_type="image/png"))
    return "/files/out-0.png"


# -- one installer per kind ---------------------------------------------------------------------


def install_openai(server: FakeServer) -> tuple[str, str]:
    def generate(req: Recorded) -> Response:
        n = int(req.json().get("n") or 1)
        return Response(json={"created": 1767225600, "data": [{"b64_json": B64_PNG}] * n,
                              "size": req.json().get("size")}, headers={"x-request-id": "req_fake"})

    server.route("POST", "/v1/images/generations", generate)
    return "POST", "/v1/images/generations"


def install_stability(server: FakeServer, model_path: str = "sd3") -> tuple[str, str]:
    def generate(req: Recorded) -> Response:
        if "application/json" in req.headers.get("accept", ""):
            return Response(json={"image": B64_PNG, "finish_reason": "SUCCESS", "seed": 343940597},
                            content_type="application/json; type=image/png")
        return Response(body=PNG, content_type="image/png", headers={"finish-reason": "SUCCESS", "seed": "343940597"})

    path = f"/v2beta/stable-image/generate/{model_path}"
    server.route("POST", path, generate)
    return "POST", path


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body, file parts left out."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {str(part.get_param("name", header="content-disposition")): part.get_payload(decode=True).decode()
            for part in message.iter_parts() if part.get_filename() is None}


def ideogram_answer(url: str, prompt: str, n: int) -> Response:
    """Ideogram's ``data[]`` answer, legacy and 3.0 alike (ImageGenerationResponseV3)."""
    item = {"url": url, "prompt": prompt, "resolution": "1024x1024", "is_image_safe": True, "seed": 1705925986,
            "style_type": "GENERAL"}
    return Response(json={"created": "2026-01-05T17:32:00+00:00", "data": [item] * n})


def install_ideogram(server: FakeServer) -> tuple[str, str]:
    image_path = serve_image(server)

    def generate(req: Recorded) -> Response:
        image_request = req.json()["image_request"]
        return ideogram_answer(server.url + image_path, image_request["prompt"],
                               int(image_request.get("num_images") or 1))

    server.route("POST", "/generate", generate)
    return "POST", "/generate"


def install_ideogram_v3(server: FakeServer) -> tuple[str, str]:
    """``POST /v1/ideogram-v3/generate``: multipart/form-data only, as its OpenAPI requestBody declares."""
    image_path = serve_image(server)

    def generate(req: Recorded) -> Response:
        content_type = req.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return Response(400, json={"error": f"expected multipart/form-data, got {content_type!r}"})
        fields = form_fields(content_type, req.body)
        return ideogram_answer(server.url + image_path, fields["prompt"], int(fields.get("num_images") or 1))

    server.route("POST", "/v1/ideogram-v3/generate", generate)
    return "POST", "/v1/ideogram-v3/generate"


def install_imagen(server: FakeServer, model: str = "imagen-4.0-generate-001") -> tuple[str, str]:
    def predict(req: Recorded) -> Response:
        n = int(req.json()["parameters"].get("sampleCount") or 1)
        return Response(json={"predictions": [{"mimeType": "image/png", "bytesBase64Encoded": B64_PNG}] * n})

    path = f"/v1beta/models/{model}:predict"
    server.route("POST", path, predict)
    return "POST", path


def gemini_answer(parts: list[dict[str, Any]], finish: str = "STOP") -> dict[str, Any]:
    """A ``generateContent`` answer (google/genai/types.py GenerateContentResponse, camelCase on the wire)."""
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302},
            "modelVersion": "gemini-2.5-flash-image", "responseId": "fake-response-1"}


def gemini_image(data: bytes = PNG, mime: str = "image/png") -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}


def install_gemini(server: FakeServer, model: str = "gemini-2.5-flash-image") -> tuple[str, str]:
    def generate(req: Recorded) -> Response:
        return Response(json=gemini_answer([gemini_image()]))

    path = f"/v1beta/models/{model}:generateContent"
    server.route("POST", path, generate)
    return "POST", path


def install_a1111(server: FakeServer) -> tuple[str, str]:
    def txt2img(req: Recorded) -> Response:
        body = req.json()
        n = int(body.get("batch_size") or 1)
        info = {"seed": 1234567, "all_seeds": [1234567 + i for i in range(n)], "steps": body.get("steps", 50),
                "cfg_scale": body.get("cfg_scale", 7.0), "sampler_name": body.get("sampler_name") or "Euler a",
                "width": body["width"], "height": body["height"]}
        import json

        return Response(json={"images": [B64_PNG] * n, "parameters": body, "info": json.dumps(info)},
                        headers={"X-Process-Time": "0.0123"})

    server.route("POST", "/sdapi/v1/txt2img", txt2img)
    return "POST", "/sdapi/v1/txt2img"


class A1111Interruptible:
    """A webui whose txt2img computes for ``run_s`` unless ``POST /sdapi/v1/interrupt`` stops it.

    As the webui does, an interrupted run answers 200 at once with the images made so far
    (``interrupted_images`` of them); the interrupt answers ``{}`` and is recorded with its time.
    ``started`` is set when a txt2img request reaches the server.
    """

    def __init__(self, server: FakeServer, run_s: float = 3.0, interrupted_images: int = 1,
                 interrupt_answer_s: float = 0.0) -> None:
        self.run_s = run_s
        self.interrupted_images = interrupted_images
        #: how long the interrupt takes to answer (a busy webui), and time.monotonic() of each answer
        self.interrupt_answer_s = interrupt_answer_s
        self.interrupts_answered: list[float] = []
        self.started = threading.Event()
        self.interrupt = threading.Event()
        #: time.monotonic() of each interrupt received
        self.interrupts: list[float] = []
        self._lock = threading.Lock()
        server.route("POST", "/sdapi/v1/txt2img", self._txt2img)
        server.route("POST", "/sdapi/v1/interrupt", self._interrupt)

    def _txt2img(self, req: Recorded) -> Response:
        import json

        body = req.json()
        n = int(body.get("batch_size") or 1)
        self.started.set()
        interrupted = self.interrupt.wait(self.run_s)
        count = min(n, self.interrupted_images) if interrupted else n
        info = {"seed": 7, "all_seeds": [7 + i for i in range(count)], "width": body["width"],
                "height": body["height"]}
        return Response(json={"images": [B64_PNG] * count, "parameters": body, "info": json.dumps(info)})

    def _interrupt(self, req: Recorded) -> Response:
        with self._lock:
            self.interrupts.append(time.monotonic())
        self.interrupt.set()
        if self.interrupt_answer_s:
            time.sleep(self.interrupt_answer_s)
        with self._lock:
            self.interrupts_answered.append(time.monotonic())
        return Response(json={})


class ReplicateJobs:
    """Replicate's prediction lifecycle: ``starting`` -> ``processing`` x polls -> ``succeeded``."""

    def __init__(self, server: FakeServer, polls_until_done: int = 1, model: str = "black-forest-labs/flux-schnell",
                 kept_outputs: int | None = None):
        self.server = server
        self.polls_until_done = polls_until_done
        #: succeed with at most this many outputs, as flux-schnell does when its safety checker drops some
        self.kept_outputs = kept_outputs
        self.jobs: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self._ids = itertools.count(1)
        self.image_path = serve_image(server)
        self.create_path = f"/v1/models/{model}/predictions"
        server.route("POST", self.create_path, self.create)
        server.route("GET", "/v1/predictions/{id}", self.get)
        server.route("POST", "/v1/predictions/{id}/cancel", self.cancel)

    def create(self, req: Recorded) -> Response:
        job_id = f"job{next(self._ids):04d}"
        job = {"id": job_id, "status": "starting", "input": req.json()["input"], "output": None, "error": None,
               "polls": 0, "urls": {"get": f"{self.server.url}/v1/predictions/{job_id}"}}
        self.jobs[job_id] = job
        if self.polls_until_done == 0:
            self._finish(job)
        return Response(201, json=self._public(job))

    def get(self, req: Recorded) -> Response:
        job = self.jobs.get(req.params["id"])
        if job is None:
            return Response(404, json={"title": "Not found", "status": 404, "detail": "no such prediction"})
        job["polls"] += 1
        if job["status"] not in ("canceled", "succeeded", "failed") and job["polls"] >= self.polls_until_done:
            self._finish(job)
        elif job["status"] == "starting":
            job["status"] = "processing"
        return Response(json=self._public(job))

    def cancel(self, req: Recorded) -> Response:
        job = self.jobs.get(req.params["id"])
        if job is None:
            return Response(404, json={"detail": "no such prediction"})
        self.cancelled.append(job["id"])
        if job["status"] not in ("succeeded", "failed"):
            job["status"] = "canceled"
        return Response(json=self._public(job))

    def _finish(self, job: dict[str, Any]) -> None:
        n = int(job["input"].get("num_outputs") or 1)
        if self.kept_outputs is not None:
            n = min(n, self.kept_outputs)
        job["status"] = "succeeded"
        job["output"] = [self.server.url + self.image_path] * n
        job["metrics"] = {"predict_time": 1.21, "total_time": 1.23}

    @staticmethod
    def _public(job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if k != "polls"}
