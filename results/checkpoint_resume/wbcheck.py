"""List each offline W&B run of a workdir: id, history steps with their logged keys, final summary."""

import sys
from pathlib import Path
from fmnist_jax import tracking

for d in sorted(Path(sys.argv[1], "wandb").glob("offline-run-*")):
    history, summary = tracking.offline_run(d)
    print(d.name)
    for r in history:
        media = {k[: -len("/_type")] for k in r if k.endswith("/_type")}
        keys = sorted(media | {k for k in r if not k.startswith("_") and not any(k.startswith(m + "/") for m in media)})
        print(f"  step {r['_step']}: {keys}")
    print(
        "  summary:", {k: summary[k] for k in ("val_accuracy", "test_accuracy", "test_loss", "params") if k in summary}
    )
