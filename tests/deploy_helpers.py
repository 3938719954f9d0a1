"""A trained-in-memory tiny member for the deployment tests (no checkpoint needed)."""

import numpy as np

from fmnist_jax import export, members, run


def tiny_member(config, member: int = 1) -> tuple[export.TrainedMember, np.ndarray]:
    """Member `member` of `config` after one epoch (so BatchNorm statistics are not the init ones), and test images."""
    exp = run.setup(config)
    state, _ = run.train_epoch(exp, run.init_state(exp), 0, progress=False)
    s = members.unstack(state, member)
    m = exp.members[member]
    trained = export.TrainedMember(config, exp.model, {"params": s.params, "batch_stats": s.batch_stats},
                                   {"fold": m.fold, "seed": m.seed, "data_digest": exp.dataset.digest})
    return trained, exp.dataset.test_images
