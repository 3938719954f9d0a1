"""Where one single-model train step spends its time, op by op (XLA:CPU thunks via the JAX profiler).

    python benchmarks/profile_step.py --out results/bench/profile_single.txt

Shares are what to read on a loaded machine: contention stretches every op alike.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", default="results/bench/profile_single.txt")
    args = p.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    import jax
    import jax.numpy as jnp

    from configs import default
    from fmnist_jax import backend, data, members, steps, train, writers

    cfg = default.get_config()
    cfg.cv.folds, cfg.data.verify = (0,), False
    exp = train.setup(cfg, data.load(verify=False))
    state = members.unstack(train.init_state(exp), 0)
    arrays = exp.arrays["train_images"], exp.arrays["train_labels"]
    batches = [jnp.asarray(o[0]) for o in train.epoch_order(exp, 0)[: args.steps + 3]]
    jitted = jax.jit(
        steps.make_train_step(cfg), donate_argnums=(0,), compiler_options=backend.compiler_options(cfg.compile.cpu_conv)
    )
    hlo = jitted.lower(state, *arrays, batches[0]).compile().as_text() or ""
    for b in batches[:3]:
        state, _ = jitted(state, *arrays, b)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            t = time.perf_counter()
            for b in batches[3:]:
                state, _ = jitted(state, *arrays, b)
            jax.block_until_ready(state)
            wall_ms = 1e3 * (time.perf_counter() - t) / args.steps
        with gzip.open(next(Path(d).rglob("*perfetto_trace.json.gz"))) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    shapes = {m.group(1): m.group(2) for m in re.finditer(r"^\s*(?:ROOT )?%(\S+) = (\S+) ", hlo, re.M)}
    per_op: collections.Counter = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and name in shapes:
            per_op[name] += e.get("dur", 0) / args.steps / 1000
    total = sum(per_op.values())
    groups: collections.Counter = collections.Counter()
    for name, ms in per_op.items():
        groups[re.sub(r"\.\d+$", "", name)] += ms
    lines = [
        f"# {args.steps} steps, batch {cfg.train.batch_size}, load average {[round(x, 2) for x in os.getloadavg()]}",
        f"# sum of op times {total:.1f} ms/step (ops on 2 threads can overlap); wall {wall_ms:.1f} ms/step "
        f"under the profiler. Eigen convolutions (compile.cpu_conv={cfg.compile.cpu_conv!r}) run in Eigen's "
        "thread pool and their time is not in the op rows",
        "",
        "## by op kind (ms/step, share)",
    ]
    lines += [f"{ms:9.2f}  {100 * ms / total:5.1f}%  {g}" for g, ms in groups.most_common()]
    lines += ["", f"## top {args.top} ops"]
    lines += [f"{ms:9.2f}  {100 * ms / total:5.1f}%  {n}  {shapes[n][:80]}" for n, ms in per_op.most_common(args.top)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    writers.write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
