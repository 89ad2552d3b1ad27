"""Errors raised by xfel_core; each message names the file or key at fault and what to do."""


class XfelError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(XfelError, ValueError):
    """The beamtime configuration is missing a key, has an unknown key or a wrong value."""


class RunDataError(XfelError, ValueError):
    """A raw run cannot be used as it is: missing, truncated or inconsistent files."""


class MissingInputError(XfelError, FileNotFoundError):
    """An upstream output that this step needs has not been produced yet."""


class RawFileChangedError(OSError):
    """A raw file changed while it was being read (truncated or rewritten by a copy or migration).

    An I/O error, not bad data: the step is retried, and reads the file as it is then."""


class OutputBusyError(XfelError, RuntimeError):
    """Another process is writing the same output now: two runs make one output at once."""
