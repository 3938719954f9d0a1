"""What a run needs to be reproduced: resolved config, package versions, data hash, git revision, devices, CPU."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections

from fmnist_jax.data import Dataset

PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "ml-collections",
    "chex",
    "numpy",
    "wandb",
    "fmnist_jax",
)
# Environment variables that change what JAX runs on (how many host devices members are packed over, XLA's
# compiler flags), so a recorded command line that omitted them would not reproduce the run.
ENVIRONMENT = ("JAX_NUM_CPU_DEVICES", "JAX_PLATFORMS", "XLA_FLAGS")


def environment() -> dict[str, str]:
    return {k: os.environ[k] for k in ENVIRONMENT if k in os.environ}


def command_line(argv: list[str]) -> str:
    """A shell line that reruns `argv` with the `ENVIRONMENT` it ran under."""
    return shlex.join([f"{k}={v}" for k, v in environment().items()] + argv)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


# The vector ISAs that decide XLA:CPU's speed (timings differ several-fold between them).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve")


def cpu() -> dict[str, Any]:
    """This machine's CPU model and which of `ISA_FLAGS` it has (from /proc/cpuinfo where there is one)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "cores": os.cpu_count(),
    }


def git_revision(cwd: Path | None = None) -> str | None:
    """HEAD of the checkout holding this package, with '+dirty' when its code has local changes.

    Changes under `results/` do not count: runs write their own tracked outputs there (a resumed study point's
    checkpoints and metrics), which would mark every study run dirty and hide a real change of code or config."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")


def run_record(config: ml_collections.ConfigDict, dataset: Dataset) -> dict[str, Any]:
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "environment": environment(),
        "config": config.to_dict(),
        "versions": versions(),
        "data": {"source": dataset.source, "digest": dataset.digest, "md5": dataset.md5},
        "git": git_revision(),
        "devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "cpu": cpu(),
    }
