"""`fmnist-jax retrain --from RUN --data NEW [--labels FILE] --out DIR [--member F,S] [--epochs 2] [--tolerance 0.005]`.

Fine-tunes a trained member on new labelled images (class folders of PNG/JPEG, or an IDX / .npy batch with
`--labels`), mixed with replayed images of its original training fold, evaluates before and after on the
test set and on a held-out part of the new data, and exports the new version to `--out` only if test
accuracy fell by no more than `--tolerance` (`fmnist_jax.retraining`). The decision is in `OUT/gate.json`;
exit code 0 when exported, 1 when the gate refused it.
"""

from __future__ import annotations

from absl import flags

from fmnist_jax import images
from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("from", None, "The trained run to start from (`fmnist-jax train` workdir).", flag_values=fv)
    flags.DEFINE_string("data", None, "New images: a folder of class folders, or an IDX / .npy file.", flag_values=fv)
    flags.DEFINE_string("labels", None, "Class indices (IDX or .npy) for an IDX / .npy --data file.", flag_values=fv)
    flags.DEFINE_string("out", None, "A new folder for the new model version (and gate.json).", flag_values=fv)
    parsing.define_member(fv, "FOLD,SEED of the member to fine-tune (default: best validation accuracy).")
    flags.DEFINE_integer("epochs", 2, "Fine-tuning epochs.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("lr", None, "Peak learning rate (cosine to 0); default: a tenth of the run's.", flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "Batch size (default: the run's).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer(
        "replay", None, "Original training images mixed in (default: as many as new ones; -1: all).", flag_values=fv
    )
    flags.DEFINE_float("holdout", 0.2, "Share of the new data held out for evaluation.", flag_values=fv)
    flags.DEFINE_float(
        "tolerance", 0.005, "Largest fall in test accuracy (fraction) that still passes the gate.", flag_values=fv
    )
    flags.DEFINE_integer("seed", 0, "Seed of the split, replay sample, batches and augmentation.", flag_values=fv)
    flags.DEFINE_enum("invert", "auto", images.INVERT_CHOICES, "Inversion policy for the new images.", flag_values=fv)
    flags.DEFINE_list("platforms", None, "Platforms of the exported artifact (default: cpu, cuda).", flag_values=fv)


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define, required=("from", "data", "out"))
    member = parsing.member(fv)
    from fmnist_jax import exporter, retraining  # heavy imports only once the arguments are known good

    new = retraining.load_new_data(fv.data, fv.labels, fv.invert)
    gate = retraining.retrain(
        str(fv["from"].value),
        new,
        fv.out,
        member=member,
        epochs=fv.epochs,
        lr=fv.lr,
        batch_size=fv.batch_size,
        replay=fv.replay,
        holdout=fv.holdout,
        tolerance=fv.tolerance,
        seed=fv.seed,
        platforms=tuple(fv.platforms or exporter.PLATFORMS),
    )
    b, a = gate["before"], gate["after"]
    held = (
        ""
        if a["new_holdout"] is None
        else (f"; held-out new data {100 * b['new_holdout']:.2f}% -> {100 * a['new_holdout']:.2f}%")
    )
    print(f"test accuracy {100 * b['test']:.2f}% -> {100 * a['test']:.2f}%{held}")
    if not gate["accepted"]:
        print(f"gate refused: {gate['rule']} does not hold; nothing exported (see {fv.out}/gate.json)")
        return 1
    print(f"gate passed: exported the new version to {fv.out}")
    return 0
