"""Numba epochs on two threads against where the two cores sit, over time.

Each step probes a cache line's round trip between two cores
(:func:`hmnist.probe.round_trip_ns`), then times one numba epoch of the
matrix's cell (20,000 samples of [784, 100, 10], batch 10, float64, two
threads). At the end it prints the correlation of the two and the epochs'
median and IQR on either side of 200 ns. On a virtual machine whose
cores the hypervisor moves, the epochs measured while the cores sat far
apart are the slow ones.

    HMNIST_DATA=... .venv/bin/python bench/placement.py --seconds 180
"""

import argparse
import sys
import time

import numpy as np

from hmnist import bench, kernels, probe, stats
from hmnist.errors import HmnistError
from hmnist.network import Network
from hmnist.trainer import shuffles

SIZES = (784, 100, 10)
SAMPLES = 20_000
FAR_NS = 200


def measure(seconds, data_dir=None):
    """Return ``(round trip ns, epoch seconds)`` pairs for ``seconds`` seconds."""
    (x, y), _ = bench.load_samples(data_dir, "float64")
    kernel = kernels.get("numba")
    initial = Network(SIZES, seed=0)
    orders = shuffles(0, len(x))
    pairs = []
    with kernel.limit_threads(2):
        kernel.warm_up(initial, x, y, bench.COST, 10, n_samples=SAMPLES)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            trip = probe.round_trip_ns()
            order = next(orders)[:SAMPLES]
            net = initial.copy()
            start = time.perf_counter()
            kernel.train_epoch(net, x, y, order, 10, bench.ETA, bench.COST)
            pairs.append((trip, time.perf_counter() - start))
    return pairs


def summary(pairs):
    """Return the lines that describe the pairs."""
    trips = np.array([trip for trip, _ in pairs], dtype=float)
    epochs = np.array([epoch for _, epoch in pairs])
    lines = [
        f"{len(pairs)} epochs of {SAMPLES:,} samples; correlation of round trip "
        f"and epoch time {np.corrcoef(trips, epochs)[0, 1]:.2f}"
    ]
    for name, chosen in (("near", trips <= FAR_NS), ("far", trips > FAR_NS)):
        if chosen.any():
            lines.append(
                f"{name} (round trip {'over' if name == 'far' else 'at most'} "
                f"{FAR_NS} ns): {chosen.sum()} epochs, round trip median "
                f"{stats.median(trips[chosen]):.0f} ns, epoch median "
                f"{stats.median(epochs[chosen]):.4f} s, IQR "
                f"{stats.iqr(epochs[chosen]):.4f} s"
            )
    return lines


def main(argv=None):
    """Measure, print the summary; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--data", metavar="DIR", help="MNIST files' folder")
    args = parser.parse_args(argv)
    if probe.round_trip_ns() is None:
        print("placement: needs two cores and two Numba threads", file=sys.stderr)
        return 1
    try:
        pairs = measure(args.seconds, args.data)
    except HmnistError as err:
        print(f"placement: error: {err}", file=sys.stderr)
        return 1
    if len(pairs) < 2:
        print("placement: too few epochs; give more --seconds", file=sys.stderr)
        return 1
    print("\n".join(summary(pairs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
