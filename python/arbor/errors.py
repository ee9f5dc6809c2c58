"""Typed exceptions.

Every error the package raises derives from :class:`ArborError`. HTTP errors
map one class per status family, each carrying the HTTP ``status`` and the
server's ``message`` (the ``error`` field of the JSON error body)::

    try:
        client.images.get("no-such-tag")
    except arbor.NotFound as e:
        print(e.status, e.message)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Type

if TYPE_CHECKING:  # pragma: no cover
    from .objects import Operation, Result

__all__ = [
    "ArborError",
    "ConfigError",
    "ConnectionFailed",
    "HTTPError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Gone",
    "TooLarge",
    "Unprocessable",
    "TooEarly",
    "RateLimited",
    "ServerError",
    "OperationError",
    "OperationFailed",
    "OperationCancelled",
    "WaitTimeout",
    "CommandFailed",
    "NoImage",
    "error_for_status",
]


class ArborError(Exception):
    """Base class of every error raised by the arbor package.

    ``status`` is the HTTP status for errors the server returned and ``None``
    for client-side errors; ``message`` is the human-readable cause.
    """

    status: Optional[int] = None

    def __init__(self, message: str, *, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class ConfigError(ArborError):
    """The client cannot find the daemon's URL or token."""


class ConnectionFailed(ArborError):
    """The daemon could not be reached (after retries, where allowed)."""


class HTTPError(ArborError):
    """The server answered with an error status.

    Attributes: ``status`` (int), ``message`` (the server's ``error`` text),
    ``body`` (the decoded JSON error body, or ``None``), ``method`` and
    ``url`` of the request, ``retry_after`` (seconds, if the server sent
    ``Retry-After``), ``request_id`` (if the server sent one).
    """

    status: int = 0

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: Any = None,
        method: str = "",
        url: str = "",
        retry_after: Optional[float] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(message, status=status)
        self.body = body
        self.method = method
        self.url = url
        self.retry_after = retry_after
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method else ""
        return f"{self.status}: {self.message}{where}"


class BadRequest(HTTPError):
    """400: the request was malformed or a value was invalid."""

    status = 400


class Unauthorized(HTTPError):
    """401: the token is missing, unknown, revoked or expired."""

    status = 401


class Forbidden(HTTPError):
    """403: the token lacks the permission for this action."""

    status = 403


class NotFound(HTTPError):
    """404: no such image, tag, file, operation or path."""

    status = 404


class Conflict(HTTPError):
    """409: the action conflicts with the current state (e.g. cancelling a finished operation)."""

    status = 409


class Gone(HTTPError):
    """410: the resource is gone (for event streams: retry later)."""

    status = 410


class TooLarge(HTTPError):
    """413: the request body (an upload) is larger than the server accepts."""

    status = 413


class Unprocessable(HTTPError):
    """422: the request was well-formed but cannot be processed."""

    status = 422


class TooEarly(HTTPError):
    """425: not ready yet (e.g. events of a pending operation); retried automatically."""

    status = 425


class RateLimited(HTTPError):
    """429: too many requests or operations in flight; retried automatically."""

    status = 429


class ServerError(HTTPError):
    """5xx: the server failed."""

    status = 500


_BY_STATUS: Dict[int, Type[HTTPError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: TooLarge,
    422: Unprocessable,
    425: TooEarly,
    429: RateLimited,
}


def error_for_status(status: int) -> Type[HTTPError]:
    """Return the exception class for an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return HTTPError


class OperationError(ArborError):
    """An operation did not produce a usable result. ``operation`` is its handle."""

    def __init__(self, message: str, operation: "Operation") -> None:
        super().__init__(message)
        self.operation = operation


class OperationFailed(OperationError):
    """The operation ended FAILED (an infrastructure or setup error, not a non-zero exit)."""


class OperationCancelled(OperationError):
    """The operation ended CANCELLED."""


class WaitTimeout(OperationError, TimeoutError):
    """``wait(timeout=...)`` expired before the operation finished (it keeps running).
    ``operations`` lists every unfinished one where several were awaited
    (:func:`arbor.as_completed`); ``operation`` is the first."""

    def __init__(self, message: str, operation: "Operation", operations: Optional[List["Operation"]] = None) -> None:
        super().__init__(message, operation)
        self.operations = list(operations) if operations else [operation]


class CommandFailed(ArborError):
    """A run with ``check=True`` exited non-zero or timed out; ``result`` holds the outcome."""

    def __init__(self, message: str, result: "Result") -> None:
        super().__init__(message)
        self.result = result


class NoImage(ArborError):
    """A result has no image: the run was disposable (pass ``disposable=False``) or failed."""
