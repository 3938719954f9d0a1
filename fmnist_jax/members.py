"""The member axis: all folds x seeds of one config trained in one compiled program.

A per-model function becomes a function over stacked pytrees with a leading member
axis. Why not plain `jax.vmap` everywhere: vmapping per-member conv weights lowers to
grouped convolutions, which XLA:CPU runs badly. Measured on the 2-core Intel Xeon
(AVX-512) with the reference CNN, batch 128, img/s over all members (results/bench/cpu.md):
5 members unrolled in one jit 906 vs 928 one by one; vmap 457 (0.49x). Since one model's
step already keeps both cores busy (Eigen convolutions, fmnist_jax/backend.py), unrolling
gains nothing over one by one there but one dispatch per step; it costs nothing either.
So on CPU the members are unrolled inside one jit, `vmap` is kept for GPU/TPU, where
batched convolutions are fast, and members are sharded over devices whenever JAX sees
several that divide the member count (two host CPU devices measured no faster: 977 img/s
for 4 members, results/bench/cpu_2dev_k4.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fmnist_jax.metrics import Metrics

AXIS = "members"
STRATEGIES = ("auto", "unroll", "vmap")


@dataclasses.dataclass(frozen=True)
class Member:
    """One model of a run: a fold of the k-fold split and a seed."""

    fold: int
    seed: int

    @property
    def tag(self) -> str:
        return f"fold{self.fold}_seed{self.seed}"


def members_of(config: ml_collections.ConfigDict) -> list[Member]:
    """Every (fold, seed) pair of the config, seed-major: the order of the stacked member axis."""
    folds, seeds = tuple(config.cv.folds), tuple(config.seeds)
    if not folds or not seeds or len(set(folds)) != len(folds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"cv.folds {folds} and seeds {seeds} must be non-empty and without repeats")
    return [Member(f, s) for s in seeds for f in folds]


def index(ms: Sequence[Member], fold: int, seed: int) -> int:
    """Position of member (fold, seed) on the stacked axis; ValueError naming the run's members if absent."""
    for i, m in enumerate(ms):
        if (m.fold, m.seed) == (fold, seed):
            return i
    raise ValueError(
        f"no member fold={fold} seed={seed} in this run; members (fold, seed): {[(m.fold, m.seed) for m in ms]}"
    )


def keys(m: Member) -> tuple[jax.Array, jax.Array]:
    """(init, augmentation) keys: init depends on the seed only, augmentation on seed and fold."""
    base = jax.random.key(m.seed)
    return jax.random.fold_in(base, 0), jax.random.fold_in(jax.random.fold_in(base, 1), m.fold)


def resolve_strategy(strategy: str) -> str:
    """'auto' -> 'unroll' on CPU, 'vmap' on accelerators (see module docstring for why)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown members.strategy {strategy!r}; use one of {STRATEGIES}")
    if strategy == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return strategy


def make_mesh(n_members: int, max_devices: int = 0) -> Mesh:
    """A 1-D mesh over as many devices as evenly divide the members (at most `max_devices`, 0 = all)."""
    devices = jax.devices()
    limit = min(len(devices), max_devices or len(devices), n_members)
    n = max(d for d in range(1, limit + 1) if n_members % d == 0)
    return Mesh(np.array(devices[:n]), (AXIS,))


def _unrolled(fn: Callable, in_axes: Sequence[int | None]) -> Callable:
    def run(*args):
        n = next(jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, in_axes) if ax == 0)
        outs = [fn(*(unstack(a, i) if ax == 0 else a for a, ax in zip(args, in_axes))) for i in range(n)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    return run


def over_members(
    fn: Callable,
    in_axes: Sequence[int | None],
    mesh: Mesh,
    strategy: str = "auto",
    donate_argnums: tuple[int, ...] = (),
    compiler_options: dict[str, str | bool] | None = None,
) -> Callable:
    """Jit `fn` over a leading member axis on the arguments whose `in_axes` is 0.

    Outputs carry the member axis. Each member computes exactly what it would alone: only
    its own slice of the stacked arguments enters its computation.
    """
    strategy = resolve_strategy(strategy)
    local = _unrolled(fn, in_axes) if strategy == "unroll" else jax.vmap(fn, in_axes=tuple(in_axes))
    if mesh.size > 1:
        specs = tuple(P(AXIS) if ax == 0 else P() for ax in in_axes)
        local = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P(AXIS))
    return jax.jit(local, donate_argnums=donate_argnums, compiler_options=compiler_options)


def place(tree: Any, mesh: Mesh, stacked: bool) -> Any:
    """Put a pytree on the mesh: split along the member axis, or replicated."""
    return jax.device_put(tree, NamedSharding(mesh, P(AXIS) if stacked else P()))


def unstack(tree: Any, i: int) -> Any:
    """Member i of a stacked pytree."""
    return jax.tree.map(lambda x: x[i], tree)


def evaluate(
    eval_step: Callable,
    variables: Any,
    images: jax.Array,
    labels: jax.Array,
    idx_list: Sequence[np.ndarray],
    batch_size: int,
    mesh: Mesh,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-member metrics of `eval_step` (over `over_members`) on each member's own indices, and logits [M, N, 10].

    Index lists of unequal length are padded to whole batches and masked out of the metrics; N is the
    longest list's length. Training (validation folds) and restored runs (test) evaluate through here.
    """
    n_max = -(-max(map(len, idx_list)) // batch_size) * batch_size
    idx = np.zeros((len(idx_list), n_max), np.int32)
    mask = np.zeros((len(idx_list), n_max), bool)
    for i, ix in enumerate(idx_list):
        idx[i, : len(ix)], mask[i, : len(ix)] = ix, True
    total: Metrics | None = None
    logits = []
    for s in range(0, n_max, batch_size):
        m, lg = eval_step(
            variables, images, labels, *place((idx[:, s : s + batch_size], mask[:, s : s + batch_size]), mesh, True)
        )
        total = m if total is None else total.merge(m)
        logits.append(lg)
    assert total is not None  # every index list has at least one batch
    return total.compute(), np.concatenate([np.asarray(x) for x in logits], axis=1)[:, : max(map(len, idx_list))]
