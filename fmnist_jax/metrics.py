"""Metrics as values (CLU style): steps return sums, callers merge them and compute at the end.

Sums rather than means, so that merging batches of different sizes (a masked last
eval batch, members with different fold sizes) is exact.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class Metrics:
    loss_sum: jax.Array
    correct: jax.Array
    count: jax.Array

    @classmethod
    def from_logits(
        cls, logits: jax.Array, labels: jax.Array, losses: jax.Array, mask: jax.Array | None = None
    ) -> Metrics:
        mask = jnp.ones_like(labels, jnp.float32) if mask is None else mask.astype(jnp.float32)
        hits = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return cls(loss_sum=jnp.sum(losses * mask), correct=jnp.sum(hits * mask), count=jnp.sum(mask))

    def merge(self, other: Metrics) -> Metrics:
        return jax.tree.map(jnp.add, self, other)

    def compute(self) -> dict[str, np.ndarray]:
        """{'loss', 'accuracy'} as numpy; keeps any leading member axis."""
        count = np.asarray(self.count)
        return {"loss": np.asarray(self.loss_sum) / count, "accuracy": np.asarray(self.correct) / count}
