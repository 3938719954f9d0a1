"""Training throughput of the reference CNN: one model, K members together vs one by one, and PyTorch.

    python benchmarks/speed.py --quick          # ~2 min; full run without --quick ~5 min
    python benchmarks/speed.py --xla-flags='--xla_cpu_use_xnnpack=true' --out results/bench/explore/xnnpack

Every variant runs the project's own code path on the real data (`run.setup`, the
on-device gather/augment/normalise train step) and is timed after compilation, in
rounds that interleave the variants, so that a load change on a shared machine hits
all of them alike; ratios are also taken within each round ("paired"). Writes
`<out>.json` and `<out>.md` with machine info, load averages, FLOPs and GFLOP/s.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/speed.py` from anywhere

VARIANTS = (
    "single",
    "single_ynnpack",
    "single_flax_pool",
    "together",
    "one_by_one",
    "vmap",
    "single_dp",
    "torch",
    "torch_cl",
    "packed",
    "separate",
    "ema",
    "se",
    "lean",
    "distilled",
)
DEFAULT_VARIANTS = "single,single_flax_pool,together,one_by_one,torch,torch_cl"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds (about 2 minutes)")
    p.add_argument(
        "--config",
        default="default",
        choices=("default", "best"),
        help="whose network and train step to time: configs/default.py (the reference CNN) or configs/best.py",
    )
    p.add_argument("--members", type=int, default=5, help="K: members trained together (folds of the default config)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=0, help="train steps per variant per round (default 10, quick 4)")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 5, quick 3)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--strategy", default="auto", help="members.strategy for 'together' (auto, unroll, vmap)")
    p.add_argument(
        "--options",
        action="append",
        default=[],
        metavar="NAME:KEY=VAL;...",
        help="extra variant 'single[NAME]': the single-model step compiled with these XLA compiler "
        "options, timed in the same rounds as 'single' (repeatable)",
    )
    p.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
    p.add_argument("--cpu-devices", type=int, default=1, help="host CPU devices JAX exposes (jax_num_cpu_devices)")
    p.add_argument("--out", default="results/bench/cpu", help="output path without extension")
    args = p.parse_args(argv)
    args.steps = args.steps or (4 if args.quick else 10)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.argv = argv
    # XLA reads its flags once, when the backend starts: set them before anything imports jax.
    os.environ["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), args.xla_flags) if f)
    import jax

    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    from benchmarks import bench  # noqa: E402  (imports jax-using code after the flags are set)

    report = bench.measure(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bench.write(report, out)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
