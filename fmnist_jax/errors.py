"""The library's errors, in one light module: the CLI maps them to one-line messages without importing JAX."""


class DataError(RuntimeError):
    """Missing, unreadable or corrupt data; the message says how to fix it."""


class BudgetError(ValueError):
    """A model over the parameter budget; refused before anything trains."""


class ConfigError(ValueError):
    """A config value of the wrong type or out of range; the message names the key."""


class CheckpointDamaged(RuntimeError):
    """A checkpoint's files differ from the digest recorded when it was saved (flipped or cut bytes)."""


class WorkdirBusy(RuntimeError):
    """Another live process trains in this workdir."""


class Diverged(RuntimeError):
    """A member's loss or parameters stopped being finite; training stops before anything non-finite is saved."""
