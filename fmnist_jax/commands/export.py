"""`fmnist-jax export --workdir RUN --out DIR [--member FOLD,SEED] [--ema] [--platforms cpu,cuda] [--nocheck]`.

Writes one trained member (default: the best by validation accuracy) as `model.jax` + `manifest.json`
(`fmnist_jax.exporter`), with the drift reference that `serve` monitors against (statistics of the
member's held-out validation images), then checks the reloaded artifact on the run's real test set
against the Flax model before reporting anything.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "A finished `fmnist-jax train` run.", flag_values=fv)
    flags.DEFINE_string("out", None, "Folder for model.jax and manifest.json.", flag_values=fv)
    parsing.define_member(fv, "FOLD,SEED of the member to export (default: best validation accuracy).")
    parsing.define_ema(fv)
    flags.DEFINE_list(
        "platforms",
        None,
        "Platforms the artifact can run on (default: every one the exporter targets).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "reference", True, "Store drift reference statistics (validation images) in the manifest.", flag_values=fv
    )
    flags.DEFINE_bool(
        "check", True, "Verify the artifact on the run's test set against the Flax model.", flag_values=fv
    )


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define, required=("workdir", "out"))
    member = parsing.member(fv)
    from fmnist_jax import data, exporter  # heavy imports only once the arguments are known good
    from fmnist_jax.artifact import MANIFEST_FILE, MODEL_FILE

    trained = exporter.load_member(fv.workdir, member, fv.ema)
    ds = data.for_config(trained.config, trained.info["data_digest"]) if fv.check or fv.reference else None
    reference = None
    if ds is not None and fv.reference:
        source = f"validation fold {trained.info['fold']} of the training set"
        reference = exporter.reference_statistics(trained, exporter.reference_images(trained, ds), source)
    manifest = exporter.export_model(trained, fv.out, tuple(fv.platforms or exporter.PLATFORMS), reference)
    if ds is not None and fv.check:
        manifest["check"] = check = exporter.check_against_flax(trained, fv.out, ds.test_images, ds.test_labels)
        exporter.write_manifest(fv.out, manifest)
        print(
            f"check on {check['test_images']} test images: accuracy {100 * check['exported_test_accuracy']:.2f}% "
            f"(run reported {100 * manifest['test_accuracy']:.2f}%), max |logit diff| vs Flax "
            f"{check['max_abs_logit_diff_vs_flax']:.2e}"
        )
    from fmnist_jax import tracking

    tracking.log_model(trained.config, fv.workdir, fv.out, manifest)  # W&B 'model' artifact unless disabled
    m = manifest["member"]
    print(
        f"exported fold {m['fold']} seed {m['seed']} ({manifest['model']['params']:,} params) "
        f"to {Path(fv.out) / MODEL_FILE} and {MANIFEST_FILE}"
    )
    return 0
