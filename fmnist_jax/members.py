"""The member axis: all folds x seeds of one config trained in one compiled program.

A per-model function becomes a function over stacked pytrees with a leading member
axis. Why not plain `jax.vmap` everywhere: vmapping per-member conv weights lowers to
grouped convolutions, which XLA:CPU runs badly. Measured on the 2-core Intel Xeon
(AVX-512) with the reference CNN, batch 128, img/s over all members (results/bench/cpu.md):
5 members unrolled in one jit 906 vs 928 one by one; vmap 457 (0.49x). Since one model's
step already keeps both cores busy (Eigen convolutions, fmnist_jax/backend.py), unrolling
gains nothing over one by one there but one dispatch per step; it costs nothing either.
So on CPU the members are unrolled inside one jit, `vmap` is kept for GPU/TPU, where
batched convolutions are fast, and members are sharded over the devices JAX sees, in
every process of a multi-process run (`fmnist_jax.distributed`; two host CPU devices
measured no faster: 977 img/s for 4 members, results/bench/cpu_2dev_k4.md).

Any member count runs on any device count: `shard_map` needs the member axis to divide
evenly, so it is padded to `slots` with copies of real members (`padded`), whose results
are dropped. Copies rather than zeros or uneven placement: a copy computes exactly what a
real member computes (finite, the same cost, so every device does the same work), and
each member's computation only ever reads its own slice, so no real member's numbers can
change. The mesh takes the fewest devices that give each device the fewest members
(5 members on 4 devices: 3 devices of 2 slots, one copy, not 4 of 2 with three copies),
since the step takes as long as the busiest device and spare copies only cost energy (or,
on host CPU devices sharing cores, time). Checkpoints hold the real members only
(`unpad`), so they restore on any device count (`pad` again).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fmnist_jax.errors import ConfigError
from fmnist_jax.metrics import Metrics

AXIS = "members"
STRATEGIES = ("auto", "unroll", "vmap")
T = TypeVar("T")


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


def devices_per_process(n_members: int, n_processes: int, local_devices: int, max_devices: int = 0) -> int:
    """How many of each process's devices the member axis uses: the fewest that give each the fewest members.

    Every process takes the same number (at least one: each runs the same program over its own
    shards); `max_devices` (0 = all) caps the total. The step takes as long as the busiest device
    (ceil(members / devices) members), so among the counts that reach the smallest load the smallest
    wins: it pads least.
    """
    cap = min(max_devices or n_processes * local_devices, n_processes * local_devices)
    if cap < n_processes:
        raise ConfigError(
            f"members.devices={max_devices} is below the {n_processes} processes of this run: each needs a device"
        )
    counts = range(1, cap // n_processes + 1)
    return min(counts, key=lambda d: (-(-n_members // (n_processes * d)), d))


def make_mesh(n_members: int, max_devices: int = 0) -> Mesh:
    """A 1-D mesh for `n_members` members over the same number of devices of every process (`devices_per_process`).

    The member count need not divide the mesh: `slots` pads it (module docstring).
    """
    by_process: dict[int, list[jax.Device]] = {}
    for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        by_process.setdefault(d.process_index, []).append(d)
    local = min(map(len, by_process.values()))
    n = devices_per_process(n_members, len(by_process), local, max_devices)
    return Mesh(np.array([d for p in sorted(by_process) for d in by_process[p][:n]]), (AXIS,))


def slots(n_members: int, mesh: Mesh) -> int:
    """Length of the computed member axis: the members, padded to a multiple of the mesh size."""
    return -(-n_members // mesh.size) * mesh.size


def padded(items: Sequence[T], n: int) -> list[T]:
    """`items` followed by copies of its first ones, to length `n`: the per-slot members, keys or index lists."""
    return [items[i % len(items)] for i in range(n)]


def pad(tree: Any, mesh: Mesh) -> Any:
    """A stacked pytree of the real members (sharded or replicated on `mesh`) extended to `slots` by copies of its
    first members and split over the mesh; unchanged when nothing is padded."""
    n = jax.tree.leaves(tree)[0].shape[0]
    if slots(n, mesh) == n:
        return tree
    take = np.array([i % n for i in range(slots(n, mesh))])
    return jax.jit(lambda t: jax.tree.map(lambda x: x[take], t), out_shardings=NamedSharding(mesh, P(AXIS)))(tree)


def unpad(tree: Any, n_members: int, mesh: Mesh) -> Any:
    """The first `n_members` of a padded stacked pytree, replicated on `mesh` (a member axis that does not divide
    the mesh cannot be split over it); unchanged when nothing is padded."""
    if jax.tree.leaves(tree)[0].shape[0] == n_members:
        return tree
    return jax.jit(lambda t: jax.tree.map(lambda x: x[:n_members], t), out_shardings=NamedSharding(mesh, P()))(tree)


def stored_sharding(n_members: int, mesh: Mesh) -> NamedSharding:
    """Where a restored (unpadded) stacked state goes: split over the mesh when it divides, else replicated."""
    return NamedSharding(mesh, P(AXIS) if n_members % mesh.size == 0 else P())


def to_host(tree: Any) -> Any:
    """Numpy copies of a pytree's leaves; leaves spread over other processes are gathered from all of them
    (`np.asarray` cannot read shards another process holds)."""

    def get(x: Any) -> np.ndarray:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(get, tree)


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
    """Put a pytree (the same value in every process) on the mesh: split along the member axis, or replicated."""
    sharding = NamedSharding(mesh, P(AXIS) if stacked else P())
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: _global(x, sharding), tree)


def _global(x: Any, sharding: NamedSharding) -> jax.Array:
    """One process's copy of a host value as its part of a global array; PRNG keys go as their raw data, which
    `device_put` cannot do for keys onto other processes' devices."""
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_global(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)


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
    longest list's length. `variables` may carry padding slots (`pad`): they evaluate copies of the first
    index lists and are dropped, so M = len(idx_list). Training (validation folds) and restored runs (test)
    evaluate through here.
    """
    n_real, n_len = len(idx_list), max(map(len, idx_list))
    idx_list = padded(idx_list, jax.tree.leaves(variables)[0].shape[0])
    n_max = -(-n_len // batch_size) * batch_size
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
        logits.append(lg)  # fetched after the loop, so the next batch is dispatched while this one runs
    assert total is not None  # every index list has at least one batch
    metrics = {k: v[:n_real] for k, v in to_host(total).compute().items()}
    return metrics, np.concatenate([to_host(x) for x in logits], axis=1)[:n_real, :n_len]
