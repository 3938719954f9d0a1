"""Multi-process runs: joining one, and the few rules that keep N processes one run.

JAX is multi-controller: every process runs the same program over global arrays, and
collectives (gloo over TCP on CPU, NCCL on GPU) join their devices. So every process loads
the data, trains, evaluates and checkpoints in lockstep (Orbax saves collectively: each
process writes the shards it holds), and only what leaves the program is restricted:
process 0 alone takes the workdir lock, prints, and writes metrics, summary, config,
record and W&B; the others wait on its decisions (`broadcast`), so all stop together.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from fmnist_jax.errors import ConfigError, RunError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def check_args(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """ConfigError naming the first bad one of `--coordinator HOST:PORT`, `--num_processes`, `--process_id`
    (None: left to the cluster, e.g. SLURM, or to `$JAX_COORDINATOR_ADDRESS`)."""
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--coordinator={coordinator!r} must be HOST:PORT with PORT in 1-65535")
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num_processes={num_processes} must be at least 1")
    if process_id is not None and (process_id < 0 or (num_processes is not None and process_id >= num_processes)):
        raise ConfigError(f"--process_id={process_id} must be in [0, {num_processes or 'num_processes'})")


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
) -> None:
    """Join a multi-process run; call it in every process before anything else touches JAX.

    Arguments left None come from the cluster (`jax.distributed.initialize` detects SLURM, Open MPI,
    Cloud TPU and Kubernetes) or `$JAX_COORDINATOR_ADDRESS`. A loopback coordinator listens on loopback
    only (JAX's default binds every interface). On CPU the processes' collectives are gloo (JAX's default).
    """
    check_args(coordinator, num_processes, process_id)
    bind = coordinator if coordinator and coordinator.rpartition(":")[0] in LOOPBACK else None
    try:
        jax.distributed.initialize(
            coordinator, num_processes, process_id, initialization_timeout=timeout_s, coordinator_bind_address=bind
        )
    except ValueError as e:  # a parameter neither given nor found in the cluster's environment
        raise ConfigError(f"cannot join a multi-process run: {e}") from None


def is_main() -> bool:
    """Whether this process writes the run's files (process 0; the only process of a plain run)."""
    return jax.process_index() == 0


def broadcast(value: int) -> int:
    """Process 0's `value` (a flag or small code) in every process: one decision for all, so none waits alone in
    a collective that the others skipped."""
    if jax.process_count() == 1:
        return int(value)
    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def check_same(value: Any, what: str) -> None:
    """RunError unless every process holds the same JSON-able `value` (compared by hash): processes given other
    configs or data would still run in lockstep and silently mix them."""
    if jax.process_count() == 1:
        return
    text = json.dumps(value, sort_keys=True, default=str)
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(digest))
    differ = [p for p in range(len(every)) if not np.array_equal(every[p], every[0])]
    if differ:
        raise RunError(f"processes {differ} have another {what} than process 0; start every process the same way")
