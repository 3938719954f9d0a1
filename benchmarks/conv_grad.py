"""Every 3x3 convolution of the default and best networks, forward and both gradients, per implementation.

    python benchmarks/conv_grad.py                     # ~3 min; writes results/bench/conv_grad.{json,md}

Why it exists: the train step's time is mostly convolutions, and which implementation wins
depends on the CPU (YNNPACK's weight gradient was 4-7 GFLOP/s on an AVX2-only EPYC, 32 on
an AVX-512 Xeon). Per layer (batch 128, NHWC) it times, after compilation, medians of
interleaved repeats of:

- `fwd`, `dx` (input gradient), `dw` (weight gradient) with XLA's convolution compiled by
  each `compile.cpu_conv` choice (fmnist_jax/backend.py: Eigen or YNNPACK);
- the weight gradient as GEMMs, the alternative a custom VJP would use: `dw_im2col`, one
  GEMM over the 9 shifted views of the padded input concatenated on channels; `dw_3gemm`,
  the width shifts folded into channels and one GEMM per height shift.

Each GEMM variant is checked against XLA's weight gradient (relative error printed).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from configs import best, default  # noqa: E402
from fmnist_jax import backend  # noqa: E402
from fmnist_jax.record import cpu, git_revision, versions  # noqa: E402
from fmnist_jax.writers import write_json, write_text  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")


def conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)


def _padded(x: jax.Array) -> jax.Array:
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def dw_im2col(x: jax.Array, g: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    xp = _padded(x)
    p = jnp.concatenate([xp[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], -1)
    return (g.reshape(-1, g.shape[-1]).T @ p.reshape(-1, 9 * c)).T.reshape(3, 3, c, -1)


def dw_3gemm(x: jax.Array, g: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    xw = jnp.concatenate([_padded(x)[:, :, j : j + w] for j in range(3)], -1)  # [B, H+2, W, 3C]
    g2 = g.reshape(-1, g.shape[-1])
    return jnp.stack([xw[:, i : i + h].reshape(-1, 3 * c).T @ g2 for i in range(3)]).reshape(3, 3, c, -1)


def layers(config) -> list[tuple[int, int, int]]:
    """(spatial size, in channels, out channels) of each conv of a config's network."""
    out, size, c_in = [], 28, 1
    for stage, (width, depth) in enumerate(zip(config.model.widths, config.model.depths)):
        size = size // 2 if stage else size
        for _ in range(depth):
            out.append((size, c_in, width))
            c_in = width
    return out


def _timed(fns: dict, args: tuple, repeats: int) -> dict[str, float]:
    """Median ms per call of each compiled fn, repeats interleaved across the fns."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        jax.block_until_ready(f(*args))
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[k].append(1e3 * (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in times.items()}


def measure(batch: int, repeats: int) -> list[dict]:
    shapes = sorted(set(layers(default.get_config()) + layers(best.get_config())), key=lambda s: (-s[0], s[1], s[2]))
    rows = []
    for size, c_in, c_out in shapes:
        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(k1, (batch, size, size, c_in))
        g = jax.random.normal(k2, (batch, size, size, c_out))
        w = jax.random.normal(k3, (3, 3, c_in, c_out)) / (3 * c_in**0.5)
        fns = {}
        for lib in backend.CPU_CONV:
            opts = backend.compiler_options(lib)
            fns[f"fwd_{lib}"] = jax.jit(lambda x, g, w: conv(x, w), compiler_options=opts)
            fns[f"dx_{lib}"] = jax.jit(lambda x, g, w: jax.vjp(lambda x: conv(x, w), x)[1](g)[0], compiler_options=opts)
            fns[f"dw_{lib}"] = jax.jit(lambda x, g, w: jax.vjp(lambda w: conv(x, w), w)[1](g)[0], compiler_options=opts)
        opts = backend.compiler_options("eigen")
        fns["dw_im2col"] = jax.jit(lambda x, g, w: dw_im2col(x, g), compiler_options=opts)
        fns["dw_3gemm"] = jax.jit(lambda x, g, w: dw_3gemm(x, g), compiler_options=opts)
        ref = fns["dw_eigen"](x, g, w)
        errors = {
            k: float(jnp.abs(fns[k](x, g, w) - ref).max() / jnp.abs(ref).max())
            for k in ("dw_ynnpack", "dw_im2col", "dw_3gemm")
        }
        ms = _timed(fns, (x, g, w), repeats)
        gflop = 2 * batch * size * size * 9 * c_in * c_out / 1e9
        rows.append(
            {
                "layer": f"{size}x{size} {c_in}->{c_out}",
                "gflop_per_part": gflop,
                "ms": ms,
                "rel_error_vs_dw_eigen": errors,
            }
        )
        print(rows[-1]["layer"], " ".join(f"{k} {v:.1f}" for k, v in ms.items()), flush=True)
    return rows


def markdown(r: dict) -> str:
    cols = list(r["rows"][0]["ms"])
    lines = [
        f"# 3x3 convolutions, forward and gradients, {r['time']}",
        "",
        f"`{r['command']}`",
        "",
        f"- machine: {r['cpu']['model']} (ISA: {', '.join(r['cpu']['isa'])}), {r['cpu']['cores']} cores; "
        f"jax {r['versions']['jax']}; git {r['git']}",
        f"- batch {r['batch']}, NHWC, median ms of {r['repeats']} interleaved calls after compilation; "
        "GFLOP is one part (forward, dx or dw each)",
        "",
        "| layer | GFLOP | " + " | ".join(cols) + " | best dw |",
        "|---|---:|" + "---:|" * (len(cols) + 1),
    ]
    for row in r["rows"]:
        dws = {k: v for k, v in row["ms"].items() if k.startswith("dw")}
        lines.append(
            f"| {row['layer']} | {row['gflop_per_part']:.2f} | "
            + " | ".join(f"{row['ms'][c]:.1f}" for c in cols)
            + f" | {min(dws, key=dws.__getitem__)} |"
        )
    total = {c: sum(row["ms"][c] for row in r["rows"]) for c in cols}
    lines += [
        "",
        "Sums over these layers (ms): " + ", ".join(f"{c} {v:.1f}" for c, v in total.items()),
        "",
        "Largest relative error of each weight gradient against `dw_eigen`: "
        + ", ".join(
            f"{k} {max(row['rel_error_vs_dw_eigen'][k] for row in r['rows']):.1e}"
            for k in r["rows"][0]["rel_error_vs_dw_eigen"]
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", default="results/bench/conv_grad")
    args = p.parse_args(argv)
    report = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/conv_grad.py", *argv]),
        "cpu": cpu(),
        "versions": versions(),
        "git": git_revision(),
        "batch": args.batch,
        "repeats": args.repeats,
        "rows": measure(args.batch, args.repeats),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
