"""The one error hierarchy: every error knows its HTTP status and whether the caller caused it."""

from __future__ import annotations


class SmneuronError(Exception):
    """Base of every error this package raises on purpose.

    Attributes:
        status_code: HTTP status a server returns for it.
        message: a sentence a person can act on; never a traceback.
    """

    status_code: int = 500
    client_error: bool = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, str | int]:
        return {"error": self.message, "type": self.type, "code": self.status_code}


class ClientError(SmneuronError):
    """The input was wrong: a request body, a hyperparameter, a data file."""

    status_code = 400
    client_error = True


class ConfigurationError(ClientError):
    """A setting, hyperparameter or /opt/ml file is missing or invalid."""


class DataError(ClientError):
    """A training channel is missing, empty or malformed."""


class UnsupportedContentType(ClientError):
    status_code = 415


class NotAcceptable(ClientError):
    status_code = 406


class PayloadTooLarge(ClientError):
    status_code = 413


class ArtifactError(SmneuronError):
    """The model artifact is missing, broken, or does not fit this host."""

    status_code = 500


class NotReady(SmneuronError):
    status_code = 503


class AcceleratorError(SmneuronError):
    """The process layout does not fit the accelerator (e.g. more workers than NeuronCores)."""

    status_code = 500


class ServerError(SmneuronError):
    status_code = 500
