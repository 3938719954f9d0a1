"""Inference speed of an exported model: batch-1 latency and batch-N throughput, on real test images.

    python benchmarks/inference.py --model model/ --out results/serve/inference_cpu.json

Times the public path a caller uses (`ExportedModel.logits`: numpy in, padding to the
compiled shape, numpy out), after compiling both shapes. Writes the numbers with the device,
versions and the machine's load average (this CPU is shared, so the load says how noisy
the run was).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fmnist_jax import data
from fmnist_jax.artifact import ExportedModel
from fmnist_jax.writers import write_json


def timings(fn, x: np.ndarray, calls: int) -> np.ndarray:
    """Seconds per call of `fn(x)`, `calls` times after two warm-up calls."""
    fn(x)
    fn(x)
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn(x)
        out[i] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="exported model folder")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--latency_calls", type=int, default=300)
    p.add_argument("--throughput_calls", type=int, default=30)
    args = p.parse_args(argv)

    model = ExportedModel.load(args.model)
    test = data.load().test_images
    load_before = os.getloadavg()
    lat = timings(model.logits, test[:1], args.latency_calls)
    thr = timings(model.logits, test[: args.batch], args.throughput_calls)
    result: dict[str, Any] = {
        "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        "model": {
            "member": model.manifest["member"],
            "params": model.manifest["model"]["params"],
            "test_accuracy": model.manifest["test_accuracy"],
            "sha256": model.manifest["model_sha256"],
        },
        "batch1_latency_ms": {
            "median": 1e3 * float(np.median(lat)),
            "p90": 1e3 * float(np.percentile(lat, 90)),
            "p99": 1e3 * float(np.percentile(lat, 99)),
            "calls": args.latency_calls,
        },
        f"batch{args.batch}_images_per_s": {
            "median": args.batch / float(np.median(thr)),
            "best": args.batch / float(thr.min()),
            "calls": args.throughput_calls,
        },
        "batch1_images_per_s": 1.0 / float(np.median(lat)),
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(
        f"batch 1: {result['batch1_latency_ms']['median']:.2f} ms median latency "
        f"(p90 {result['batch1_latency_ms']['p90']:.2f} ms); batch {args.batch}: "
        f"{result[f'batch{args.batch}_images_per_s']['median']:.0f} images/s on {result['device']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
