"""Per scenario and backend: scores, latency, cost and failures; and which backend wins each scenario.

A scenario is won by the backend with the highest **score per request**: the mean of the deciding
score over the scenario's requests, a failed request counting as 0, so a backend cannot win by
failing on the hard prompts. The deciding score is a person's verdicts when the run had a
reviewer, else the first of the scenario's scorers that scored anything (typography: OCR, then
CLIP). A tie goes to the lower price per image, then the lower median latency. With no score at
all the winner is the backend with the highest success rate at the lowest price per image, and
the summary says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .runner import RunResult, Sample, backend_metrics


def text_summary(samples: Sequence[Sample]) -> dict[str, float] | None:
    """OneIG-Bench's text metrics over ``samples``' OCR scores: mean edit distance, completion rate and word
    accuracy, and the mean normalised similarity (the OCR score); ``None`` without OCR scores.

    OneIG-Bench's composite text score is left out: its edit-distance cap (100) suits its long texts, and on
    the few words of a sign it rates a blank image 0.9."""
    scores = [sc for s in samples for sc in s.scores if sc.scorer == "ocr" and sc.metrics]
    if not scores:
        return None
    n = len(scores)
    ed = sum(sc.metrics["edit_distance"] for sc in scores) / n
    cr = sum(sc.metrics["complete"] for sc in scores) / n
    words = sum(sc.metrics["words"] for sc in scores)
    wac = sum(sc.metrics["words_correct"] for sc in scores) / words if words else 1.0
    return {"images": n, "edit_distance": ed, "completion_rate": cr, "word_accuracy": wac,
            "similarity": sum(sc.value for sc in scores) / n}


def scenario_metrics(result: RunResult) -> dict[str, dict[str, dict[str, Any]]]:
    """``{scenario: {backend: metrics}}``: :func:`~pixelroute.scenarios.backend_metrics` over the
    scenario's samples plus ``images``, ``cost_usd_per_image``, ``score_per_request`` per scorer and
    ``text`` (:func:`text_summary`)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario in result.suite.scenarios:
        per_backend: dict[str, dict[str, Any]] = {}
        here = [s for s in result.samples if s.scenario == scenario.name]
        applies: dict[str, set[str]] = {}
        for s in here:
            for sc in s.scores:
                applies.setdefault(sc.scorer, set()).add(s.prompt)
        for backend in result.backends:
            mine = [s for s in here if s.backend == backend]
            m = backend_metrics(mine)
            images = m["requests"] - m["failures"]
            m["images"] = images
            m["cost_usd_per_image"] = m["cost_usd"] / images if images else None
            m["score_per_request"] = _per_request(mine, applies)
            m["text"] = text_summary(mine)
            per_backend[backend] = m
        out[scenario.name] = per_backend
    return out


def _per_request(samples: Sequence[Sample], applies: dict[str, set[str]]) -> dict[str, float]:
    """Per scorer: the mean score over the requests it applies to, a failed request counting as 0.

    A scorer applies to a prompt it scored on some backend (``applies``; OCR only scores prompts that
    ask for text), so a failure is charged where a success would have been scored.
    """
    out = {}
    for name, prompts in sorted(applies.items()):
        values = [sc.value for s in samples for sc in s.scores if sc.scorer == name]
        failed = sum(not s.ok and s.prompt in prompts for s in samples)
        if values or failed:
            out[name] = sum(values) / (len(values) + failed)
    return out


def _deciding_scorer(result: RunResult, scenario: str, metrics: dict[str, dict[str, Any]]) -> str | None:
    scored = {name for m in metrics.values() for name in m["score_per_request"]}
    order = ["verdict", *result.scenario(scenario).scorers]
    return next((name for name in order if name in scored), None)


def winners(result: RunResult, metrics: dict[str, dict[str, dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """One row per scenario: the winning backend, what decided it, its score and price, and the runner-up."""
    metrics = metrics or scenario_metrics(result)
    rows = []
    for scenario in result.suite.scenarios:
        per_backend = metrics[scenario.name]
        by = _deciding_scorer(result, scenario.name, per_backend)

        def rank(backend: str, by: str | None = by, per_backend: dict[str, dict[str, Any]] = per_backend) -> tuple:
            m = per_backend[backend]
            price = m["cost_usd_per_image"] if m["cost_usd_per_image"] is not None else float("inf")
            latency = m["latency_p50_s"] if m["latency_p50_s"] is not None else float("inf")
            quality = m["score_per_request"].get(by, 0.0) if by else 1.0 - (m["failure_rate"] or 0.0)
            return (-quality, price, latency)

        candidates = sorted((b for b in result.backends if per_backend[b]["images"]), key=rank)
        row: dict[str, Any] = {"scenario": scenario.name, "title": scenario.title,
                               "decided_by": by or "success rate, then price", "winner": None, "runner_up": None}
        for key, backend in zip(("winner", "runner_up"), candidates, strict=False):
            m = per_backend[backend]
            row[key] = {"backend": backend, "score": m["score_per_request"].get(by) if by else None,
                        "success_rate": 1.0 - (m["failure_rate"] or 0.0), "cost_usd_per_image": m["cost_usd_per_image"],
                        "latency_p50_s": m["latency_p50_s"]}
        rows.append(row)
    return rows


__all__ = ["scenario_metrics", "text_summary", "winners"]
