"""qallegro's own exception types.

All of them derive from ``ValueError`` so that code written against the plain ``ValueError`` keeps
working; ``qallegro.cli.main`` turns them (and the other errors a user can cause: missing files,
bad YAML, wrong types) into one line ``qallegro <cmd>: error: <message>``.
"""

from __future__ import annotations


class QAllegroError(ValueError):
    """An error the user can fix: the message names the file, frame, key or argument at fault."""


class CorruptFileError(QAllegroError):
    """A checkpoint or model file that is empty, truncated, not ours, or fails its sha256 check."""


class TrainingDiverged(QAllegroError):
    """The loss or the weights became NaN/inf during training; training stopped."""


class ConfigTypeError(QAllegroError, TypeError):
    """A config value of the wrong type; a ``TypeError`` and (as every config error) a ``ValueError``."""
