"""`fmnist-jax evaluate --workdir DIR [--member FOLD,SEED] [--step EPOCH] [--tta_flip true|false] [--tta_shift N]
[--ema] [--out DIR]`.

Restores a run's checkpoint (the config comes from the checkpoint itself, so no config
flag can disagree with the weights) and reports test accuracy per member with mean ± std,
per-class accuracy and the confusion matrix, saved as `evaluation.json` and
`confusion.png` (members pooled) under `DIR/eval/` (or `--out`).
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "A `fmnist-jax train` workdir.", flag_values=fv)
    parsing.define_member(fv, "Only this member, as FOLD,SEED (default: all).")
    flags.DEFINE_integer("step", None, "Checkpoint to restore, in finished epochs (default: latest).", flag_values=fv)
    flags.DEFINE_enum(
        "tta_flip",
        None,
        ["true", "false"],
        "Test-time flip averaging on or off (default: as the run was configured).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "tta_shift",
        None,
        "Test-time moves by this many pixels up, down, left and right, averaged (0: none; default: as configured).",
        lower_bound=0,
        upper_bound=3,
        flag_values=fv,
    )
    parsing.define_ema(fv)
    flags.DEFINE_string(
        "out", None, "Where evaluation.json and confusion.png go (default: WORKDIR/eval).", flag_values=fv
    )


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define, required=("workdir",))
    member = parsing.member(fv)
    from fmnist_jax import evaluation, plots  # heavy imports only once the arguments are known good
    from fmnist_jax.writers import write_json

    tta_flip = None if fv.tta_flip is None else fv.tta_flip == "true"
    report = evaluation.evaluate_run(fv.workdir, member, fv.step, tta_flip, fv.tta_shift, fv.ema)
    out = Path(fv.out or Path(fv.workdir) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    suffix = (
        (f"_fold{member[0]}_seed{member[1]}" if member else "")
        + (f"_epoch{fv.step}" if fv.step else "")
        + ("" if tta_flip is None else f"_tta_{fv.tta_flip}")
        + ("" if fv.tta_shift is None else f"_shift{fv.tta_shift}")
        + ("_ema" if fv.ema else "")
    )
    write_json(out / f"evaluation{suffix}.json", report)
    acc = report["test_accuracy"]
    plots.save(
        plots.confusion(
            report["confusion"],
            title=f"{report['name']} epoch {report['epoch']}: test confusion, "
            f"{len(report['members'])} member(s) pooled; accuracy {100 * acc['mean']:.2f}%",
        ),
        out / f"confusion{suffix}.png",
    )
    print(evaluation.format_report(report))
    print(f"wrote {out / f'evaluation{suffix}.json'} and {out / f'confusion{suffix}.png'}")
    return 0
