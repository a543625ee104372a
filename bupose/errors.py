"""Exceptions that bupose raises for bad input. Each message names the file, field or key and what was expected."""


class BuposeError(Exception):
    """Base class of bupose's own errors."""


class ConfigError(BuposeError, ValueError):
    """An unknown config key, a value of the wrong type, or a malformed config file."""


class DataError(BuposeError, ValueError):
    """A dataset file, image or annotation that cannot be used as it is."""


class CheckpointError(BuposeError, ValueError):
    """A checkpoint that does not fit the model it is loaded into."""
