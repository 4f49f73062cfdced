"""The error users see as one line: defined apart so that low-level modules (storage)
and the config can both raise it."""


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message names it."""
