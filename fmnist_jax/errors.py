"""The library's errors, in one light module: the CLI maps them to one-line messages without importing JAX.

Every error that bad input can cause derives from `Error`, so a caller (the CLI, a notebook, a
sweep agent) catches the whole family at once; `Diverged` is the one that is not about input.
"""


class Error(Exception):
    """Bad input to the library: a message worth showing as it is, without a traceback."""


class DataError(Error, RuntimeError):
    """Missing, unreadable or corrupt data; the message says how to fix it."""


class BudgetError(Error, ValueError):
    """A model over the parameter budget; refused before anything trains."""


class ConfigError(Error, ValueError):
    """A config value of the wrong type or out of range, or an unknown key; the message names the key."""


class RunError(Error, RuntimeError):
    """A run or ablation directory that is missing what is asked of it, or holds a different run."""


class NoCheckpoint(RunError, FileNotFoundError):
    """No (such) checkpoint; a FileNotFoundError to callers that can do without one."""


class CheckpointMismatch(RunError):
    """The workdir's checkpoint was made by a different config or data."""


class CheckpointDamaged(RunError):
    """A checkpoint's files differ from the digest recorded when it was saved (flipped or cut bytes)."""


class WorkdirBusy(Error, RuntimeError):
    """Another live process trains in this workdir."""


class Diverged(RuntimeError):
    """A member's loss or parameters stopped being finite; training stops before anything non-finite is saved."""
