"""`fmnist-jax report --workdir DIR [--out DIR]` or `fmnist-jax report --eda --out DIR`.

A run dir gets learning curves, the per-member table, the model summary and (with a checkpoint)
a test confusion matrix and sample predictions; an ablation dir gets its table, bar chart and
per-point validation curves (`fmnist_jax.reporting`). Everything lands in `DIR/report/` (or `--out`).
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "A run dir (summary.json + metrics.jsonl) or an ablation dir.", flag_values=fv)
    flags.DEFINE_string("out", None, "Where the PNGs and report.md go (default WORKDIR/report).", flag_values=fv)
    flags.DEFINE_bool("eda", False, "Write the data-exploration figures (real data) to --out instead.", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Fashion-MNIST folder for --eda (default: the usual search).", flag_values=fv)


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define)
    if fv.eda and not fv.out:
        raise parsing.UsageError("--eda needs --out")
    if not fv.eda and not fv.workdir:
        raise parsing.UsageError("missing --workdir (or --eda --out DIR)")
    from fmnist_jax import data, reporting  # heavy imports only once the arguments are known good

    if fv.eda:
        for p in reporting.write_eda(data.load(fv.data_dir), fv.out):
            print(f"wrote {p}")
        return 0
    workdir = Path(fv.workdir)
    if (workdir / "summary.json").exists():
        path = reporting.run_report(workdir, fv.out)
    elif (workdir / "table.csv").exists():
        path = reporting.ablation_report(workdir, fv.out)
    else:
        raise parsing.UsageError(f"{workdir} is neither a run dir (summary.json) nor an ablation dir (table.csv)")
    print(f"wrote {path}")
    return 0
