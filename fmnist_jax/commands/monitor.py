"""`fmnist-jax monitor --store FILE --out DIR [--marks FILE] [--window N] [--bucket N]`.

Turns a service's feedback store (`serve --store FILE`) into PNG plots over time (live accuracy, drift
scores, predicted class mix, latency), `monitoring.json` and `report.md` (`fmnist_jax.monitoring_report`).
It only reads the store, so it can run while the service writes.
"""

from __future__ import annotations

from absl import flags

from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("store", None, "The SQLite store a service wrote (`serve --store`).", flag_values=fv)
    flags.DEFINE_string("out", None, "Folder for the PNGs, monitoring.json and report.md.", flag_values=fv)
    marks = 'JSON phases [{"label": ..., "start": images served before it}] to mark and summarise.'
    flags.DEFINE_string("marks", None, marks, flag_values=fv)
    flags.DEFINE_integer(
        "window", 500, "Labelled predictions per rolling accuracy point.", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_integer("bucket", 250, "Images per class-mix and latency point.", lower_bound=1, flag_values=fv)


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define, required=("store", "out"))
    from fmnist_jax import monitoring_report  # heavy imports only once the arguments are known good

    marks = monitoring_report.read_marks(fv.marks) if fv.marks else []
    path = monitoring_report.write_report(fv.store, fv.out, marks, fv.window, fv.bucket)
    print(f"wrote {path}")
    return 0
