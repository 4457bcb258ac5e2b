"""The one error hierarchy: every error knows its HTTP status and whether the caller caused it."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class SmneuronError(Exception):
    """Base of every error this package raises on purpose.

    Attributes:
        status_code: HTTP status a server returns for it.
        message: a sentence a person can act on; never a traceback.
    """

    status_code: int = 500
    client_error: bool = False
    # Extra response headers a server sends with this error (e.g. Retry-After on a 503).
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if headers is not None:
            self.headers = dict(headers)

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


class DeadlineExceeded(SmneuronError):
    """A request was not answered within its deadline (the batcher gave up waiting)."""

    status_code = 504
    phrase = "Gateway Timeout"


GatewayTimeout = DeadlineExceeded


class Overloaded(SmneuronError):
    """The worker's queue is full: retry later (the response carries ``Retry-After``)."""

    status_code = 503
    phrase = "Service Unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class HTTPError(SmneuronError):
    """Raise from a user hook to answer a status of your choice with your message.

    ``raise HTTPError(422, "field 'inputs' is too short")`` answers 422 with
    ``{"error": "field 'inputs' is too short", "type": "HTTPError", "code": 422}``. A 4xx
    status is the client's fault (logged at INFO, no trace); a 5xx is logged with the trace.
    """

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"HTTPError status must be 400-599, got {status}")
        super().__init__(message, status_code=status, headers=headers)
        self.client_error = status < 500
