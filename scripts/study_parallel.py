"""The study's grids on one accelerator: several `fmnist-jax ablate` programs at once, until a deadline.

    python scripts/study_parallel.py --dir results/study/e60 --epochs 60 --jobs 12 --deadline 480 \\
        width=width architecture=architecture depth=depth depth_fixed=depth:fixed training=training \\
        -- --config.wandb.mode=disabled

Each `NAME=SPEC` is a grid (`SPEC` as `scripts/study.sh` spells it: `depth:fixed` is `ablations/depth.py:fixed`)
whose runs go to `DIR/NAME/grid/<point>/`, where `EPOCHS=N bash scripts/study.sh grids` puts them: that command
then skips the points finished here and writes every table. Why: one point (5 vmapped members, batch 128) leaves
a GPU mostly idle, and `study.sh` trains one point after another, which is right on a 2-core CPU, where programs
would only share the cores. Here each program is one point, or the points `ablate --pack=auto` trains together,
and `--jobs` programs share the accelerator, started in the order the grids are given. A computation met twice (a
grid's baseline is another grid's point: `config_lib.differences` finds nothing between them) trains once and is
copied, as `study.sh`'s `share` does. At `--deadline` seconds the programs still running get SIGTERM (they save a
checkpoint and stop) and, `--grace` seconds later, SIGKILL. Each program's output goes to
`DIR/parallel/<NAME>.<first point>.log`. Exit 0 when every point has finished, else 3; a bad argument, 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# every program, this one too (it asks JAX how points pack), takes accelerator memory as it needs it: XLA's
# default, 75% of it up front, would leave nothing to the second program
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from fmnist_jax import ablation, config_lib  # noqa: E402
from fmnist_jax.errors import Error  # noqa: E402

RESULTS = ("config.json", "record.json", "metrics.jsonl", "ablate.json", "summary.json")  # summary last: done


def spec_path(spec: str) -> str:
    """`depth:fixed` -> `ablations/depth.py:fixed`."""
    stem, sep, arg = spec.partition(":")
    return f"ablations/{stem}.py{sep}{arg}"


def plan(grids: list[tuple[str, str]], folder: Path, epochs: int) -> tuple[list[dict], list[tuple[Path, Path]]]:
    """The programs to run, in the order of `grids` (dicts of `name`, `spec`, `points`, `workdir`), and the copies
    (finished run folder, point folder) that repeat a computation met earlier instead of training it again."""
    jobs: list[dict] = []
    copies: list[tuple[Path, Path]] = []
    known: list[tuple[dict, Path]] = []  # (config, run folder) of every point trained here or before
    for name, spec in grids:
        grid = ablation.load(spec_path(spec), {"train.epochs": epochs})
        workdir = folder / name / "grid"
        todo = []
        for p in grid.points:
            # by its files: whether a run there is of this point (with the flags given to `ablate`) `ablate` checks
            config, d = p.config.to_dict(), workdir / p.name
            same = next((src for c, src in known if not config_lib.differences(c, config)), None)
            if same is not None and not (d / "config.json").exists():
                copies.append((same, d))
                continue
            known.append((config, d))
            if not (d / "summary.json").exists():
                todo.append(p)
        for group in ablation.packs(todo, workdir):
            jobs.append({"name": name, "spec": spec_path(spec), "points": [p.name for p in group], "workdir": workdir})
    return jobs, copies


def copy_finished(copies: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Make the copies whose source has finished; returns those still waiting."""
    waiting = []
    for src, dst in copies:
        if (src / "summary.json").exists():
            dst.mkdir(parents=True, exist_ok=True)
            for f in RESULTS:
                if (src / f).exists():
                    shutil.copyfile(src / f, dst / f)
            print(f"copied {src} -> {dst}", flush=True)
        else:
            waiting.append((src, dst))
    return waiting


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, required=True, help="the budget's study folder, e.g. results/study/e60")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--jobs", type=int, default=4, help="programs at once")
    ap.add_argument("--deadline", type=float, default=float("inf"), help="seconds until SIGTERM")
    ap.add_argument("--grace", type=float, default=60, help="seconds from SIGTERM to SIGKILL")
    ap.add_argument("grids", nargs="+", help="NAME=SPEC, e.g. depth_fixed=depth:fixed")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = ap.parse_args(argv[:split]), argv[split + 1 :]  # after --: more `fmnist-jax ablate` flags
    try:
        grids = [(name, spec) for name, _, spec in (g.partition("=") for g in args.grids)]
        if not all(name and spec for name, spec in grids) or args.jobs < 1 or args.epochs < 1:
            got = f"{args.grids}, {args.jobs}, {args.epochs}"
            raise Error(f"grids must be NAME=SPEC, --jobs and --epochs >= 1 (got {got})")
        jobs, copies = plan(grids, args.dir, args.epochs)
    except (Error, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs = args.dir / "parallel"
    logs.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="study_parallel_"))  # each program's table: `study.sh grids` writes them
    print(f"{len(jobs)} programs for {sum(len(j['points']) for j in jobs)} points, {len(copies)} copies", flush=True)
    start, running, queue = time.monotonic(), list[dict](), list(jobs)
    while (queue and time.monotonic() - start < args.deadline) or running:
        while queue and len(running) < args.jobs and time.monotonic() - start < args.deadline:
            job = queue.pop(0)
            cmd = [sys.executable, "-m", "fmnist_jax.cli", "ablate", job["spec"], "--workdir", str(job["workdir"])]
            cmd += [f"--point={p}" for p in job["points"]]
            cmd += ["--out", str(scratch / f"{job['name']}.{job['points'][0]}"), "--progress=false"]
            cmd += [f"--config.train.epochs={args.epochs}", "--config.checkpoint.max_to_keep=1", *extra]
            log = open(logs / f"{job['name']}.{job['points'][0]}.log", "a")  # noqa: SIM115 (closed on exit)
            job |= {
                "proc": subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
                "log": log,
                "t": time.monotonic(),
            }
            running.append(job)
            print(f"{time.monotonic() - start:6.0f}s started {job['name']}: {', '.join(job['points'])}", flush=True)
        if time.monotonic() - start >= args.deadline:
            for job in running:
                if job["proc"].poll() is None and "term" not in job:
                    job["proc"].send_signal(signal.SIGTERM)
                    job["term"] = time.monotonic()
                elif "term" in job and time.monotonic() - job["term"] > args.grace:
                    job["proc"].kill()
        for job in [j for j in running if j["proc"].poll() is not None]:
            running.remove(job)
            job["log"].close()
            took = time.monotonic() - job["t"]
            print(
                f"{time.monotonic() - start:6.0f}s exit {job['proc'].returncode} after {took:.0f}s: "
                f"{job['name']}: {', '.join(job['points'])}",
                flush=True,
            )
        copies = copy_finished(copies)
        time.sleep(1)
    shutil.rmtree(scratch, ignore_errors=True)
    left, waiting = plan(grids, args.dir, args.epochs)
    n_left = sum(len(j["points"]) for j in left) + len(waiting)
    print(f"{time.monotonic() - start:.0f}s: {n_left} points not finished", flush=True)
    return 0 if not n_left else 3


if __name__ == "__main__":
    sys.exit(main())
