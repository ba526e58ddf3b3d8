"""The pipeline worker's micro-batching: what joins a batch, and when nobody waits."""

from __future__ import annotations

import threading

from pixelroute._deadline import Deadline
from pixelroute.backends._pipeline_worker import Job, PipelineWorker


def test_jobs_queued_during_a_call_join_the_next_batch_without_a_window() -> None:
    release = threading.Event()
    batches: list[list[str]] = []

    def runner(batch: list[Job]) -> None:
        batches.append([j.payload for j in batch])
        if batch[0].payload == "first":
            release.wait(5.0)  # the call is "running" while the others arrive
        for j in batch:
            j.succeed(j.payload)

    def job(name: str, key: str = "shape-a") -> Job:
        return Job(payload=name, deadline=Deadline(None), runner=runner, key=key, batch_limit=8, window_s=0.0)

    worker = PipelineWorker("test")
    try:
        first = job("first")
        worker.submit(first)
        while not batches:  # the first call has started (alone: nothing else was queued)
            threading.Event().wait(0.001)
        later = [job("a"), job("b"), job("other", key="shape-b"), job("c")]
        for j in later:
            worker.submit(j)
        release.set()
        assert [j.future.result(5.0) for j in later] == ["a", "b", "other", "c"]
    finally:
        worker.close()
    # same-shape jobs that queued meanwhile ran as one call; the other shape kept its turn
    assert batches == [["first"], ["a", "b", "c"], ["other"]]
