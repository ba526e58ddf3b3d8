"""`pixelroute train --dask-scheduler`: lightgbm.dask on a real distributed.LocalCluster started here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelroute.router import Router, RouteRequest, SLASpec, simulate, train
from pixelroute.router.models import MANIFEST
from pixelroute.router.simulate import DEFAULT_BACKENDS

PROFILES = [b.profile() for b in DEFAULT_BACKENDS]


# lightgbm.dask sets its own thread count per worker and says so
@pytest.mark.filterwarnings("ignore:Parameter n_jobs will be ignored:UserWarning")
def test_train_on_a_dask_local_cluster_and_decide(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("lightgbm.dask")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) \
            as cluster, distributed.Client(cluster) as client:
        # the CLI passes an address string; the same path connects a client of its own
        manifest = train(simulate(3000, seed=5), tmp_path / "model", profiles=PROFILES,
                         dask_scheduler=cluster.scheduler_address)
        assert client.scheduler_info()["workers"]
    assert manifest["distributed"] is True
    on_disk = json.loads((tmp_path / "model" / MANIFEST).read_text())
    assert on_disk["version"] == manifest["version"] and all(n > 0 for n in on_disk["trees"].values())
    router = Router.load(tmp_path / "model", exploration=0.0)
    d = router.decide(RouteRequest('a sign that says "OPEN"'), SLASpec(deadline_s=30, max_cost_usd=0.1), PROFILES)
    assert d.backend is not None and d.router_version == manifest["version"]
    assert all(c.latency_p50_s > 0 and 0 <= c.p_fail <= 1 for c in d.candidates)
