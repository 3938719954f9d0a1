"""A trained-in-memory tiny member for the deployment tests (no checkpoint needed)."""

import jax
import numpy as np

from configs import default
from fmnist_jax import export, members, models, run


def tiny_member(config, member: int = 1) -> tuple[export.TrainedMember, np.ndarray]:
    """Member `member` of `config` after one epoch (so BatchNorm statistics are not the init ones), and test images."""
    exp = run.setup(config)
    state, _ = run.train_epoch(exp, run.init_state(exp), 0, progress=False)
    s = members.unstack(state, member)
    m = exp.members[member]
    trained = export.TrainedMember(
        config,
        exp.model,
        {"params": s.params, "batch_stats": s.batch_stats},
        {"fold": m.fold, "seed": m.seed, "data_digest": exp.dataset.digest},
    )
    return trained, exp.dataset.test_images


def export_untrained(out) -> None:
    """Export a small CNN with random weights to `out`: enough for tests of files and HTTP, no training."""
    config = default.get_config()
    config.model.widths, config.model.depths = (8, 16), (1, 1)
    model = models.build(config)
    variables = models.init_variables(model, jax.random.key(0))
    export.export_model(export.TrainedMember(config, model, variables, {"fold": 0, "seed": 0}), out)
