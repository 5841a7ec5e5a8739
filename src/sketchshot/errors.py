"""Domain errors. The CLI turns each into one line on stderr and a non-zero exit code."""


class SketchshotError(Exception):
    """Base class of every error sketchshot reports to a user (exit code 1)."""

    exit_code = 1


class DataError(SketchshotError):
    """Bad input data: a missing path, no images, an unreadable file, too few images."""


class CheckpointError(SketchshotError):
    """A weights file or sidecar that is missing, tampered with or does not match."""


class ConfigError(SketchshotError):
    """A configuration file or option that cannot be used (a usage error, exit code 2)."""

    exit_code = 2


class TrainingDiverged(SketchshotError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(SketchshotError):
    """Training stopped by Ctrl-C after writing the ``last`` checkpoint."""

    exit_code = 130


class UsageError(ConfigError):
    """An option or key that does not apply to what was chosen (``--temperature`` with BYOL)."""
