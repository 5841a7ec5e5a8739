"""Domain errors. The CLI turns each into one line on stderr and a non-zero exit code."""

import re


class SketchshotError(Exception):
    """Base class of every error sketchshot reports to a user (exit code 1)."""

    exit_code = 1


class DataError(SketchshotError):
    """Bad input data: a missing path, no images, an unreadable file, too few images."""


class UnreadableImage(DataError):
    """One image that cannot be used: its ``name`` (a path, or ``archive:member``) and the
    ``reason``, each on one line."""

    def __init__(self, name: str, reason: object) -> None:
        self.name = name
        # Pillow names a file it cannot identify by its buffer's repr: say "the file" instead
        text = re.sub(r"<_io\.\w+ object at 0x[0-9a-fA-F]+>", "the file", str(reason))
        self.reason = " ".join(text.split())
        super().__init__(f"cannot read image {name}: {self.reason}")


class DataWarning(UserWarning):
    """Something in the data was left out and the user should know; the command goes on
    (the CLI prints it as one 'note:' line)."""


class CheckpointError(SketchshotError):
    """A weights file or sidecar that is missing, tampered with or does not match."""


class ExportError(SketchshotError):
    """A model that could not be exported, or whose export does not compute what it does."""


class WriteFailed(SketchshotError):
    """A file could not be written (no permission, I/O error); what was saved before it is
    left as it was."""


class DiskFull(WriteFailed):
    """No space left on the device (or the disk quota is used up) while writing a file."""


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
