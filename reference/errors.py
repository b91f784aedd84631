"""Errors a user can cause (bad file, bad tensor, bad checkpoint). The CLI prints them as one line."""


class ParityUserError(Exception):
    """Base class of errors that name a user mistake; the CLI prints the message and exits 2."""


class InputError(ParityUserError, ValueError):
    """An input tensor or bundle is missing, of the wrong dtype or shape, or too short."""


class CheckpointError(ParityUserError, ValueError):
    """A checkpoint does not match the model: missing/unexpected keys or wrong shapes."""
