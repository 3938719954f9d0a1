"""`fmnist-jax evaluate --workdir DIR [--member FOLD,SEED] [--step EPOCH] [--out DIR]`.

Restores a run's checkpoint (the config comes from the checkpoint itself, so no config
flag can disagree with the weights) and reports test accuracy per member with mean ± std,
per-class accuracy and the confusion matrix, saved as `evaluation.json` and
`confusion.png` (members pooled) under `DIR/eval/` (or `--out`).
`load_trained` is the library entry point for everything that needs trained weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_collections
from absl import flags

from fmnist_jax import cmdline
from fmnist_jax.writers import write_json

if TYPE_CHECKING:  # heavy imports stay lazy, so `evaluate --help` is instant
    from fmnist_jax import run, train


def load_trained(
    workdir: str | Path, step: int | None = None
) -> tuple[ml_collections.ConfigDict, list[run.Member], train.TrainState]:
    """(config, members, stacked TrainState) of the latest checkpoint (or epoch `step`), without the dataset.

    The config is built afresh from the checkpoint, so the caller may change it. The state
    has `apply_fn` set; one member is `members.unstack(state, i)`. Raises
    `checkpoints.NoCheckpoint` (a FileNotFoundError) when the workdir has no such checkpoint.
    """
    from fmnist_jax import checkpoints, members, run

    mngr = checkpoints.manager(workdir, create=False)
    try:
        epoch, meta = checkpoints.read_meta(mngr, step)
        config = checkpoints.config_from_dict(meta["config"])
        ms = run.members_of(config)
        mesh = members.make_mesh(len(ms), config.members.devices)
        state = checkpoints.restore(
            mngr, checkpoints.abstract_state(config, meta["steps_per_epoch"], len(ms), mesh), epoch
        )
    finally:
        mngr.close()
    return config, ms, state


def member_index(ms: list[run.Member], fold: int, seed: int) -> int:
    """Position of member (fold, seed) on the stacked axis; ValueError naming the run's members if absent."""
    for i, m in enumerate(ms):
        if (m.fold, m.seed) == (fold, seed):
            return i
    raise ValueError(
        f"no member fold={fold} seed={seed} in this run; members (fold, seed): {[(m.fold, m.seed) for m in ms]}"
    )


def test_logits(
    workdir: str | Path, member: tuple[int, int] | None = None, step: int | None = None, tta_flip: bool | None = None
):
    """Restore a run (or one member), check the data is what it was trained on, evaluate on test.

    `tta_flip` overrides the run's test-time flip averaging (None: as trained).

    Returns (config, members, dataset, per-member test metrics, logits [M, N, 10], epoch).
    """
    import jax

    from fmnist_jax import checkpoints, data, members, run

    config, ms, state = load_trained(workdir, step)
    mngr = checkpoints.manager(workdir, create=False)
    try:
        epoch, meta = checkpoints.read_meta(mngr, step)
    finally:
        mngr.close()
    if member is not None:
        try:
            i = member_index(ms, *member)
        except ValueError as e:
            raise cmdline.UsageError(str(e)) from e
        state, ms = jax.tree.map(lambda x: x[i : i + 1], state), [ms[i]]
        config.cv.folds, config.seeds = (ms[0].fold,), (ms[0].seed,)
    if tta_flip is not None:
        config.eval.tta_flip = tta_flip
    dataset = data.load(config.data.dir or None, config.data.source, config.data.verify)
    if dataset.digest != meta["data_digest"]:
        raise data.DataError(
            f"the data ({dataset.digest}) is not what {workdir} was trained on ({meta['data_digest']})"
        )
    exp = run.setup(config, dataset)
    test, logits = run.evaluate(exp, members.place(state, exp.mesh, stacked=True), "test")
    return config, ms, dataset, test, logits, epoch


def evaluate_run(
    workdir: str | Path, member: tuple[int, int] | None = None, step: int | None = None, tta_flip: bool | None = None
) -> dict[str, Any]:
    """Test metrics of the restored members: per member, mean ± std, per class, confusion matrices."""
    import numpy as np

    from fmnist_jax import data, plots, run

    config, ms, dataset, test, logits, epoch = test_logits(workdir, member, step, tta_flip)
    labels = dataset.test_labels
    cms = [plots.confusion_matrix(labels, lg.argmax(-1)) for lg in logits]
    per_class = np.stack([np.diag(c) / np.maximum(c.sum(1), 1) for c in cms])
    return {
        "workdir": str(Path(workdir).resolve()),
        "name": config.name,
        "epoch": epoch,
        "data_digest": dataset.digest,
        "tta_flip": config.eval.tta_flip,
        "members": [
            {
                "fold": m.fold,
                "seed": m.seed,
                "test_accuracy": float(test["accuracy"][i]),
                "test_loss": float(test["loss"][i]),
                "per_class_accuracy": dict(zip(data.CLASS_NAMES, per_class[i].tolist())),
                "confusion": cms[i].tolist(),
            }
            for i, m in enumerate(ms)
        ],
        "test_accuracy": run.mean_std(test["accuracy"]),
        "per_class_accuracy": {c: run.mean_std(per_class[:, k]) for k, c in enumerate(data.CLASS_NAMES)},
        "classes": list(data.CLASS_NAMES),
        "confusion": np.sum(cms, axis=0).tolist(),  # pooled over members: rows true, columns predicted
    }


def format_report(r: dict[str, Any]) -> str:
    pct = lambda ms: f"{100 * ms['mean']:.2f} ± {100 * ms['std']:.2f}%"  # noqa: E731
    lines = [
        f"{r['name']} at epoch {r['epoch']} ({r['workdir']}); test-time flip averaging "
        f"{'on' if r['tta_flip'] else 'off'}",
        "member          test acc   test loss",
    ]
    lines += [
        f"fold {m['fold']} seed {m['seed']:<4d} {100 * m['test_accuracy']:8.2f}%  {m['test_loss']:9.4f}"
        for m in r["members"]
    ]
    lines += [
        f"test accuracy over {len(r['members'])} member(s): {pct(r['test_accuracy'])}",
        "",
        "per-class test accuracy (mean ± std over members):",
    ]
    lines += [f"  {c:12s} {pct(v)}" for c, v in r["per_class_accuracy"].items()]
    width = max(len(c) for c in r["classes"])
    lines += [
        "",
        "confusion matrix, members pooled (rows: true, columns: predicted):",
        " " * (width + 1) + " ".join(f"{c[:5]:>5s}" for c in r["classes"]),
    ]
    lines += [f"{c:>{width}s} " + " ".join(f"{n:5d}" for n in row) for c, row in zip(r["classes"], r["confusion"])]
    return "\n".join(lines)


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "A `fmnist-jax train` workdir.", flag_values=fv)
    flags.DEFINE_string("member", None, "Only this member, as FOLD,SEED (default: all).", flag_values=fv)
    flags.DEFINE_integer("step", None, "Checkpoint to restore, in finished epochs (default: latest).", flag_values=fv)
    flags.DEFINE_enum(
        "tta_flip",
        None,
        ["true", "false"],
        "Test-time flip averaging on or off (default: as the run was configured).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "out", None, "Where evaluation.json and confusion.png go (default: WORKDIR/eval).", flag_values=fv
    )


def parse_member(text: str) -> tuple[int, int]:
    """`--member FOLD,SEED` as (fold, seed)."""
    try:
        fold, seed = (int(x) for x in text.split(","))
    except ValueError as e:
        raise cmdline.UsageError(f"--member must be FOLD,SEED (two integers), got {text!r}") from e
    return fold, seed


def main(argv: list[str]) -> int:
    fv = cmdline.parse(argv, _define, required=("workdir",))
    member = None if fv.member is None else parse_member(fv.member)
    from fmnist_jax import plots

    tta_flip = None if fv.tta_flip is None else fv.tta_flip == "true"
    report = evaluate_run(fv.workdir, member, fv.step, tta_flip)
    out = Path(fv.out or Path(fv.workdir) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    suffix = (
        (f"_fold{member[0]}_seed{member[1]}" if member else "")
        + (f"_epoch{fv.step}" if fv.step else "")
        + ("" if tta_flip is None else f"_tta_{fv.tta_flip}")
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
    print(format_report(report))
    print(f"wrote {out / f'evaluation{suffix}.json'} and {out / f'confusion{suffix}.png'}")
    return 0
