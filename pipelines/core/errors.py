"""Errors a person can act on. Front ends show `str(err)` as is (UI message, API 4xx detail)."""


class UserError(Exception):
    """Bad input or an unusable file: the message says what is wrong and what to do."""


class ModelLoadError(UserError):
    """A checkpoint (or other model file) could not be loaded; the previous model stays active."""


class ParameterError(UserError, ValueError):
    """A generation parameter is out of range or of the wrong kind; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class Interrupted(Exception):
    """The user stopped the job; finished images are kept."""


class Skipped(Exception):
    """The user skipped the current image; the batch goes on."""
