"""Training throughput: simulate N records once, then time featurize + fit + calibrate + write.

    .venv/bin/python benchmarks/train_time.py [--n 1000000]

Simulation time is reported separately (it is not part of training).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from router import simulate, train
from router.simulate import DEFAULT_BACKENDS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    records = list(simulate(args.n, seed=1))
    t_sim = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = train(records, Path(tmp) / "model", profiles=[b.profile() for b in DEFAULT_BACKENDS])
        t_train = time.perf_counter() - t0
    print(f"{args.n:,} records: simulate {t_sim:.1f} s; train {t_train:.1f} s = {args.n / t_train:,.0f} rows/s; "
          f"trees {manifest['trees']}")


if __name__ == "__main__":
    main()
