"""Typed errors raised by the Z-Image client library.

The hierarchy is shallow on purpose: catch :class:`ZImageError` for everything, :class:`APIError` for any answer
the provider gave, or one of the status-keyed subclasses for a specific case.  Every message is one sentence meant
for an artist: it says what happened and what to do, and it never contains an API key or a base64 blob.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ZImageError",
    "ConfigError",
    "MissingPackageError",
    "ValidationError",
    "APIError",
    "AuthenticationError",
    "PaymentRequiredError",
    "InsufficientBalanceError",
    "BudgetExceededError",
    "BadRequestError",
    "NotFoundError",
    "ResultExpiredError",
    "RateLimitError",
    "ServerError",
    "InvalidResponseError",
    "ResponseTooLargeError",
    "URLRefusedError",
    "InvalidTaskIdError",
    "APIConnectionError",
    "APITimeoutError",
    "ResultDownloadError",
    "ResultDownloadTimeoutError",
    "CancelledError",
    "RequestCancelledError",
    "ImageDecodeError",
    "TaskError",
    "TaskFailedError",
    "TaskTimeoutError",
    "TaskCancelledError",
    "UncertainChargeError",
    "ClaimWaitTimeoutError",
]


class ZImageError(Exception):
    """Base class of every error raised by ``zimage_api``.

    ``out_of_time`` is True when the request gave up because the caller's deadline came before another attempt
    could be made; ``retry_at`` (unix time) is when the provider asked to be tried again, if it said.
    """

    out_of_time: bool = False
    retry_at: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ZImageError):
    """The library is not configured: a key or a base URL is missing or malformed."""


class MissingPackageError(ConfigError, ImportError):
    """A package the call needs is not installed (torch for tensor conversion); the message names the pip command."""

    def __init__(self, message: str, *, package: str) -> None:
        super().__init__(message)
        self.package = package


class ValidationError(ZImageError, ValueError):
    """An input was rejected locally, before any request was sent."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class APIError(ZImageError):
    """The provider answered with an error.

    Attributes: ``provider`` (display name), ``status`` (HTTP status or None), ``code`` (provider error code),
    ``param`` (the offending field when the provider named one), ``request_id`` and ``body`` (the parsed body,
    for debugging; never shown in the message).
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.code = code
        self.param = param
        self.request_id = request_id
        self.body = body


class AuthenticationError(APIError):
    """401/403: the key is missing, wrong, revoked or lacks the permission."""


class PaymentRequiredError(APIError):
    """402: the account has no balance left."""


class InsufficientBalanceError(PaymentRequiredError):
    """The account's balance does not cover the run: WaveSpeed's balance read before sending (then nothing was sent),
    or a provider's HTTP 402 (then nothing was charged). ``balance`` and ``price`` are in USD, None when unknown."""

    def __init__(self, message: str, *, balance: float | None = None, price: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.balance = balance
        self.price = price


class BudgetExceededError(ZImageError):
    """The day's budget (``[budget] daily_usd``) would be passed by this picture; nothing was sent. ``budget``,
    ``spent`` (today so far) and ``price`` are in USD."""

    def __init__(self, message: str, *, budget: float, spent: float, price: float) -> None:
        super().__init__(message)
        self.budget = budget
        self.spent = spent
        self.price = price


class BadRequestError(APIError):
    """400/415/422: the provider rejected a parameter (``param`` names it when known)."""


class NotFoundError(APIError):
    """404: the task, prediction or file does not exist (any more)."""


class ResultExpiredError(NotFoundError):
    """A result URL answered 404/410: the provider no longer hosts the picture."""


class RateLimitError(APIError):
    """429: too many requests. ``retry_after`` is seconds to wait, ``reset_at`` a unix time, when known."""

    def __init__(self, message: str, *, retry_after: float | None = None, reset_at: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.reset_at = reset_at


class ServerError(APIError):
    """5xx: the provider or its upstream failed."""


class InvalidResponseError(APIError):
    """The provider answered something that is not the documented JSON (an HTML page, truncated JSON...)."""


class ResponseTooLargeError(InvalidResponseError):
    """An answer was larger than any answer or picture of the service ever is; it was stopped at ``limit`` bytes.

    ``url`` is the address that sent it (credentials masked).
    """

    def __init__(self, message: str, *, limit: int, url: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.limit = limit
        self.url = url


class URLRefusedError(InvalidResponseError):
    """A result URL or a redirect pointed somewhere a picture never comes from (not http(s), or the local machine or
    network); nothing connected to it. ``url`` is that address (credentials masked)."""

    def __init__(self, message: str, *, url: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.url = url


class InvalidTaskIdError(InvalidResponseError):
    """A provider (or the ledger) gave a task id that cannot be a real one: a ``/``, a control character, blanks, or
    too long. Nothing is requested with it; ``task_id`` is the id made printable and cut short."""

    def __init__(self, message: str, *, task_id: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.task_id = task_id


class APIConnectionError(ZImageError):
    """The request did not get an answer.

    ``may_have_processed`` is True when the request reached the server, so a paid job may exist: the caller must
    not blindly send it again.
    """

    def __init__(self, message: str, *, provider: str = "", may_have_processed: bool = False,
                 reason: str = "") -> None:
        super().__init__(message)
        self.provider = provider
        self.may_have_processed = may_have_processed
        self.reason = reason  # what the socket said: "connection refused", "read timeout"...


class APITimeoutError(APIConnectionError):
    """The server did not answer in time."""


class ResultDownloadError(APIConnectionError):
    """The picture of a request that was already paid could not be downloaded from its result URL.

    ``url`` is the URL that failed (credentials masked); ``urls`` every result URL of that request, to download
    again later at no new charge; ``paid`` is always True. ``may_have_processed`` is True: the provider did the work.
    """

    paid = True

    def __init__(self, message: str, *, url: str, urls: list[str] | None = None, provider: str = "",
                 reason: str = "") -> None:
        super().__init__(message, provider=provider, may_have_processed=True, reason=reason)
        self.url = url
        self.urls = list(urls) if urls is not None else [url]


class ResultDownloadTimeoutError(ResultDownloadError, APITimeoutError):
    """A paid picture's download did not finish before the deadline (a stalled or trickling result host)."""


class CancelledError(ZImageError):
    """The caller cancelled (Cancel in ComfyUI, Ctrl-C in the CLI): a wait or a retry sleep stopped early.

    The one cancellation error: catch it for every kind. :class:`TaskCancelledError` is the same event seen while
    waiting for a known task, and says whether the provider cancelled that task too.
    """


RequestCancelledError = CancelledError  # the name of 0.1.0, for code that catches it


class ImageDecodeError(ZImageError):
    """A returned picture could not be decoded: invalid base64, not an image, truncated or too large."""


class TaskError(ZImageError):
    """Base class of errors about one remote task; ``task_id`` and ``provider`` identify it."""

    def __init__(self, message: str, *, task_id: str, provider: str = "") -> None:
        super().__init__(message)
        self.task_id = task_id
        self.provider = provider


class TaskFailedError(TaskError):
    """The task ended as failed. ``code`` is the provider's code; ``retryable`` says a re-run may succeed."""

    def __init__(self, message: str, *, task_id: str, provider: str = "", code: str | None = None,
                 retryable: bool = False) -> None:
        super().__init__(message, task_id=task_id, provider=provider)
        self.code = code
        self.retryable = retryable


class TaskTimeoutError(TaskError):
    """The wait's deadline passed before the task was seen final; it can be collected later by its id.

    ``cause`` is what the last status request met when that was not an answer (an unreachable server, a read
    timeout, a busy server that asked to wait past the deadline); None when the task was seen still running.
    """

    def __init__(self, message: str, *, task_id: str, provider: str = "", cause: ZImageError | None = None) -> None:
        super().__init__(message, task_id=task_id, provider=provider)
        self.cause = cause


class TaskCancelledError(TaskError, CancelledError):
    """Waiting was cancelled by the caller. ``remote_cancelled`` says whether the provider cancelled the task."""

    def __init__(self, message: str, *, task_id: str, provider: str = "", remote_cancelled: bool = False) -> None:
        super().__init__(message, task_id=task_id, provider=provider)
        self.remote_cancelled = remote_cancelled


class UncertainChargeError(ZImageError):
    """An earlier run with the same inputs sent its paid request and no answer was kept: it may have been charged,
    and nothing can tell. The same inputs are not sent again unless asked; ``candidates`` is how many predictions the
    provider's history showed in that run's window (None where the provider keeps no history)."""

    def __init__(self, message: str, *, provider: str = "", candidates: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.candidates = candidates


class ClaimWaitTimeoutError(ZImageError):
    """Another run with the same inputs was still paying for the picture when this run's timeout ended. Its
    picture becomes a receipt: the same inputs queued again get it without paying."""
