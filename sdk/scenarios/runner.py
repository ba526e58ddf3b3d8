"""Run a suite's prompts on chosen backends through the normal client, then score and measure.

Every generation goes through :meth:`pixelroute.Client.generate` pinned with ``backend=``, so it is
validated, recorded in telemetry and traceable like any other request. A person's verdicts
go through :meth:`pixelroute.Client.report_correction` (the feedback API the router learns from);
automatic scores are kept with the request id in the run's ``scores`` list, written beside
the report.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._errors import PixelrouteError, ValidationError, error_code
from .._redact import redact
from ..telemetry.stats import percentile
from .scorers import VERDICT_SCORE, Review, Score, Scorer, default_scorers
from .suite import Scenario, ScenarioPrompt, Suite

if TYPE_CHECKING:
    from PIL.Image import Image

    from .._client import Client
    from .._types import SLA

#: longest side of the PNG thumbnails inlined in the report
THUMBNAIL_PX = 256


@dataclass
class Sample:
    """One generation of one prompt with one seed on one backend, and what was learnt about it."""

    scenario: str
    backend: str
    prompt: str
    seed: int
    ok: bool
    latency_s: float
    cost_usd: float
    request_id: str | None = None
    gpu_s: float | None = None
    error: str | None = None
    error_message: str | None = None
    size: tuple[int, int] | None = None
    thumbnail_png: bytes | None = None
    scores: list[Score] = field(default_factory=list)
    review: Review | None = None


#: asked once per successful image when a person reviews the run; ``None`` skips the image
Reviewer = Callable[[Sample, "Image"], Review | None]


@dataclass
class RunResult:
    """Everything the report shows: the suite, the samples, the scorers that could not run."""

    suite: Suite
    backends: list[str]
    seeds: list[int]
    samples: list[Sample]
    scorers_used: list[str]
    scorers_skipped: dict[str, str]
    started_at: str
    wall_s: float

    def scenario(self, name: str) -> Scenario:
        return next(s for s in self.suite.scenarios if s.name == name)

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Operational metrics per backend over this run (see :func:`backend_metrics`)."""
        return {b: backend_metrics([s for s in self.samples if s.backend == b]) for b in self.backends}

    def score_log(self) -> list[dict[str, Any]]:
        """One entry per score, with the request id it belongs to (the JSON ``scores`` list)."""
        out = []
        for s in self.samples:
            for sc in s.scores:
                out.append(
                    {
                        "request_id": s.request_id,
                        "scenario": s.scenario,
                        "backend": s.backend,
                        "prompt": s.prompt,
                        "seed": s.seed,
                        "scorer": sc.scorer,
                        "value": round(sc.value, 4),
                        "detail": sc.detail,
                    }
                )
        return out


def backend_metrics(samples: Sequence[Sample]) -> dict[str, Any]:
    """GPU-s per request, failure rate, cost, requests/min, latency and correction time of ``samples``.

    ``requests_per_minute`` is throughput while the backend was busy in this run: requests /
    the minutes its calls took (the runner sends one request at a time).
    """
    n = len(samples)
    failures = [s for s in samples if not s.ok]
    busy_s = sum(s.latency_s for s in samples)
    gpu = [s.gpu_s for s in samples if s.gpu_s is not None]
    latencies = [s.latency_s for s in samples if s.ok]
    reviews = [s.review for s in samples if s.review is not None]
    cost = sum(s.cost_usd for s in samples)
    scores: dict[str, list[float]] = {}
    for s in samples:
        for sc in s.scores:
            scores.setdefault(sc.scorer, []).append(sc.value)
    errors: dict[str, int] = {}
    for s in failures:
        errors[s.error or "unknown"] = errors.get(s.error or "unknown", 0) + 1
    return {
        "requests": n,
        "failures": len(failures),
        "failure_rate": len(failures) / n if n else None,
        "errors": errors,
        "gpu_s_per_request": sum(gpu) / n if gpu and n else None,
        "cost_usd": cost,
        "cost_usd_per_request": cost / n if n else None,
        "requests_per_minute": n / (busy_s / 60.0) if busy_s > 0 else None,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "corrections": len(reviews),
        "correction_s_mean": sum(r.seconds for r in reviews) / len(reviews) if reviews else None,
        "scores": {k: sum(v) / len(v) for k, v in sorted(scores.items())},
    }


#: told after each generation: the sample, how many are done, how many the run makes in all
Progress = Callable[[Sample, int, int], None]


def thumbnail_png(image: Image, max_px: int = THUMBNAIL_PX) -> bytes:
    """A PNG of ``image`` no larger than ``max_px`` on its longest side."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_px, max_px))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def run_scenarios(
    client: Client,
    suite: Suite,
    *,
    backends: Sequence[str] | None = None,
    seeds: int = 1,
    base_seed: int = 0,
    sla: SLA | dict[str, Any] | None = None,
    width: int | None = None,
    height: int | None = None,
    scorers: dict[str, Scorer] | None = None,
    reviewer: Reviewer | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> RunResult:
    """Generate every prompt x seed of ``suite`` on every backend in ``backends`` and score the images.

    ``backends`` defaults to all of the client's backends. Failures are recorded, not raised:
    a failure rate is one of the things the run measures. ``reviewer`` (a person, or a script
    standing in for one) gives verdicts that are sent through ``client.report_correction``.
    ``progress(sample, done, total)`` hears each generation as it ends (``pixelroute scenarios run``
    draws its bar with it).
    """
    chosen = list(backends) if backends else list(client.backends)
    unknown = [b for b in chosen if b not in client.backends]
    if unknown:
        raise ValidationError(
            f"`backends` must be among the configured {', '.join(client.backends)} but includes "
            f"{', '.join(repr(b) for b in unknown)}",
            field="backends",
            value=list(chosen),
        )
    if seeds < 1:
        raise ValidationError(f"`seeds` must be at least 1 but is {seeds}", field="seeds", value=seeds)
    available = scorers if scorers is not None else default_scorers()
    wanted = sorted({name for sc in suite.scenarios for name in sc.scorers})
    skipped: dict[str, str] = {}
    usable: dict[str, Scorer] = {}
    for name in wanted:
        scorer = available.get(name)
        reason = scorer.unavailable() if scorer is not None else f"no scorer named {name!r} was given"
        if reason is None and scorer is not None:
            usable[name] = scorer
        else:
            skipped[name] = reason or "unavailable"
    seed_list = [base_seed + i for i in range(seeds)]
    total = sum(len(sc.prompts) for sc in suite.scenarios) * len(seed_list) * len(chosen)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = clock()
    samples: list[Sample] = []
    for scenario in suite.scenarios:
        for item in scenario.prompts:
            for seed in seed_list:
                for backend in chosen:
                    sample = _generate(
                        client,
                        scenario,
                        item,
                        backend,
                        seed,
                        sla,
                        width,
                        height,
                        clock,
                        usable,
                        skipped,
                        reviewer,
                    )
                    samples.append(sample)
                    if progress is not None:
                        progress(sample, len(samples), total)
    return RunResult(suite, chosen, seed_list, samples, sorted(usable), skipped, started_at, clock() - t0)


def _generate(
    client: Client,
    scenario: Scenario,
    item: ScenarioPrompt,
    backend: str,
    seed: int,
    sla: SLA | dict[str, Any] | None,
    width: int | None,
    height: int | None,
    clock: Callable[[], float],
    usable: dict[str, Scorer],
    skipped: dict[str, str],
    reviewer: Reviewer | None,
) -> Sample:
    t = clock()
    try:
        r = client.generate(item.prompt, sla=sla, seed=seed, width=width, height=height, backend=backend)
    except ValidationError:
        raise  # our own request is wrong (e.g. a size the backend refuses): stop, don't count it as a failure
    except PixelrouteError as exc:
        return Sample(
            scenario.name,
            backend,
            item.prompt,
            seed,
            ok=False,
            latency_s=clock() - t,
            cost_usd=float(getattr(exc, "cost_usd", 0.0) or 0.0),
            error=error_code(exc),
            error_message=redact(str(exc))[:300],
        )
    image = r.images[0]
    sample = Sample(
        scenario.name,
        backend,
        item.prompt,
        seed,
        ok=True,
        latency_s=r.latency_s,
        cost_usd=r.cost_usd,
        request_id=r.request_id,
        gpu_s=r.gpu_s,
        size=(image.width, image.height),
        thumbnail_png=thumbnail_png(image),
    )
    for name in scenario.scorers:
        scorer = usable.get(name)
        if scorer is None:
            continue
        try:
            score = scorer.score(image, item)
        except PixelrouteError as exc:
            # one broken engine must not sink the run: stop using it and say why in the report
            skipped[name] = f"failed during the run: {redact(str(exc))[:200]}"
            usable.pop(name, None)
            continue
        if score is not None:
            sample.scores.append(score)
    if reviewer is not None:
        review = reviewer(sample, image)
        if review is not None:
            client.report_correction(r.request_id, seconds=review.seconds, verdict=review.verdict)
            sample.review = review
            sample.scores.append(
                Score(
                    "verdict",
                    VERDICT_SCORE[review.verdict],
                    f"{review.verdict}, {review.seconds:g} s to correct",
                )
            )
    return sample


__all__ = ["Progress", "Reviewer", "RunResult", "Sample", "backend_metrics", "run_scenarios", "thumbnail_png"]
