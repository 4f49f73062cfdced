"""Training failures the CLI reports as one message (no traceback): kept free of jax and
orbax imports so the CLI can name them before importing either."""


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the newest complete one is left as it was."""
