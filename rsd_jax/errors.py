"""The project's exceptions: each names the problem (file, key, tensor) in its message."""


class RSDError(Exception):
    """Base class of every error rsd_jax raises on bad input."""


class ConfigError(RSDError, ValueError):
    """A config key or value is wrong (unknown key, wrong type, out of range)."""


class CheckpointError(RSDError):
    """A checkpoint folder or file is missing, corrupt, or does not fit the model."""


class InputError(RSDError, ValueError):
    """A prompt or dataset cannot be used as given (too long, empty, malformed, not UTF-8)."""


class OutputError(RSDError):
    """An output location cannot be used or written: a file where a folder is expected, a read-only or full
    disk, a destination that would be overwritten."""


class NumericalError(RSDError, ValueError):
    """A model produced NaN or infinite values where a number is needed (e.g. rewards to calibrate δ on)."""
