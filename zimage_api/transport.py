"""The HTTP transport shared by the three protocols: one reused session, retries, and typed errors.

A :class:`Transport` belongs to one provider. It resolves the key and the base URL at every request (so a rotated
key works at once), retries what :mod:`zimage_api.retry` allows, and turns every failure into one of the errors of
:mod:`zimage_api.errors` with a sentence an artist can act on.
"""

from __future__ import annotations

import json as jsonlib
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from ._version import __version__
from .cancel import sleep_unless
from .config import Provider, config_path, resolve_api_key, resolve_base_url
from .deadline import Deadline
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CancelledError,
    InvalidResponseError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitError,
    ResultExpiredError,
    ServerError,
    ZImageError,
)
from .logs import logger, redact
from .retry import DEFAULT_POLICY, Failure, RetryNotice, RetryPolicy, delay_for, parse_retry_after, should_retry

__all__ = ["Transport", "USER_AGENT", "error_from_response", "Timeout", "RetryCallback", "utc_clock_time"]

USER_AGENT = f"comfyui-zimage/{__version__} (+https://github.com/comfyui-zimage/comfyui-zimage)"
Timeout = tuple[float, float]
DEFAULT_TIMEOUT: Timeout = (10.0, 60.0)
FilesFactory = Callable[[], Mapping[str, tuple[str, bytes, str]]]
RetryCallback = Callable[[RetryNotice | None], None]  # a notice before each retry wait; None once a retry succeeded
LAST_ATTEMPT_SECONDS = 1.0  # the time given to the one attempt made at the deadline


class Transport:
    """HTTP for one provider.

    ``sleep`` and ``now`` (unix time, for Retry-After dates and
    ``reset_at``) are injectable so that tests and the node layer control waiting. ``cancel_check`` (a
    :class:`~zimage_api.cancel.CancelToken` or any callable) is asked between slices of a retry wait; when it turns
    true the request raises :class:`CancelledError` instead of waiting out a long backoff.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        session: requests.Session | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_POLICY,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        pool_size: int = 16,
        cancel_check: Callable[[], bool] | None = None,
    ) -> None:
        self.provider = provider
        self._api_key = api_key
        self._base_url = base_url
        self.timeout = timeout
        self.retry = retry
        self.sleep = sleep
        self.now = now
        self.rng = rng or random.Random()
        self.cancel_check = cancel_check
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        self.session = session

    @property
    def base_url(self) -> str:
        return resolve_base_url(self.provider, self._base_url)

    def api_key(self) -> str:
        """The key in force now; raises :class:`ConfigError` before any request when there is none."""
        return resolve_api_key(self.provider, self._api_key)

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def close(self) -> None:
        self.session.close()

    # -- requests -------------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: FilesFactory | None = None,
        headers: Mapping[str, str] | None = None,
        repeatable: bool | None = None,
        auth: bool = True,
        timeout: Timeout | None = None,
        stream: bool = False,
        what: str = "the request",
        cancel_check: Callable[[], bool] | None = None,
        deadline: Deadline | None = None,
        on_retry: RetryCallback | None = None,
    ) -> requests.Response:
        """Send a request with retries and return the successful response.

        ``repeatable`` says the request may be sent twice without a second charge; it defaults to True for GET and
        for requests carrying an ``Idempotency-Key``. ``files`` is a factory, called per attempt, so each retry sends a
        fresh multipart body. ``what`` names the request in error messages ("the image request").
        ``cancel_check`` overrides the transport's own for this request's retry waits.

        ``deadline`` bounds everything: no attempt's timeout and no retry wait reaches past it
        (one last attempt goes out at the deadline). A wait the server asks for that ends past it is not waited
        for: the error says so at once. The error raised then has ``out_of_time`` set. ``on_retry`` is told of each
        retry wait before it starts, and told ``None`` when a retried request got its answer.
        """
        cancel = cancel_check or self.cancel_check
        headers = dict(headers or {})
        if repeatable is None:
            repeatable = method.upper() == "GET" or any(k.lower() == "idempotency-key" for k in headers)
        if auth:
            headers["Authorization"] = f"Bearer {self.api_key()}"
        url = self.url(path)
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = self.session.request(
                    method, url, headers=headers, json=json, data=data, files=files() if files else None,
                    timeout=self._attempt_timeout(timeout or self.timeout, deadline), stream=stream,
                )
            except requests.exceptions.RequestException as err:
                failure = _classify(err)
                lost = self._connection_error(err, failure, what, repeatable, method.upper())
                if should_retry(self.retry, attempt, failure, repeatable=repeatable):
                    self._wait(attempt, None, _failure_words(failure, err), lost, cancel, deadline, on_retry)
                    continue
                raise lost from err
            if response.status_code < 400:
                logger.debug("%s %s -> %s in %.2fs", method, _path_of(url), response.status_code,
                             time.monotonic() - started)
                if attempt > 1 and on_retry is not None:
                    on_retry(None)
                return response
            error = error_from_response(self.provider, response, now=self.now())
            retry_after = _retry_after_of(error, response, self.now())
            if (isinstance(error, RateLimitError) and retry_after is not None
                    and retry_after > self.retry.max_retry_after):
                raise error
            if should_retry(self.retry, attempt, Failure.STATUS, status=response.status_code, repeatable=repeatable):
                response.close()
                self._wait(attempt, retry_after, _status_words(response.status_code), error, cancel, deadline,
                           on_retry)
                continue
            raise error

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`request`, returning the parsed JSON body (an :class:`InvalidResponseError` if it is not JSON)."""
        response = self.request(method, path, **kwargs)
        return parse_json(self.provider, response)

    def download(self, url: str, *, what: str = "the result picture") -> bytes:
        """Fetch a result file. The key is sent only to the provider's own host, never to a storage/CDN host.

        A truncated body is fetched once more; an expired URL raises :class:`ResultExpiredError`.
        """
        target, api = urlsplit(url), urlsplit(self.base_url)
        # The key goes only to the API's own origin: same host and port, and never over http when the API is https.
        same_host = (target.netloc, target.scheme) == (api.netloc, api.scheme)
        for attempt in (1, 2):
            try:
                response = self.request("GET", url, auth=same_host, what=what, stream=True)
            except NotFoundError as err:
                raise ResultExpiredError(
                    f"{self.provider.name}'s result URL has expired or no longer exists (HTTP {err.status}); "
                    "the picture cannot be downloaded any more.",
                    provider=self.provider.name, status=err.status, code=err.code, body=err.body,
                ) from err
            except APIError as err:
                if err.status in (403, 410):
                    raise ResultExpiredError(
                        f"{self.provider.name}'s result URL has expired (HTTP {err.status}); "
                        "the picture cannot be downloaded any more.",
                        provider=self.provider.name, status=err.status, code=err.code, body=err.body,
                    ) from err
                raise
            try:
                content = response.content
            except requests.exceptions.RequestException:
                content = None
            expected = response.headers.get("Content-Length")
            if content is not None and (expected is None or not expected.isdigit() or int(expected) == len(content)):
                return content
            logger.warning("download of %s was truncated (attempt %d)", _path_of(url), attempt)
        raise APIConnectionError(
            f"The download of {what} from {self.provider.name} was cut off twice; check the connection and collect "
            "the result again (the task id stays valid until the URL expires).",
            provider=self.provider.name,
        )

    # -- internals ------------------------------------------------------------------------------------------------

    @staticmethod
    def _attempt_timeout(timeout: Timeout, deadline: Deadline | None) -> Timeout:
        """The (connect, read) timeout of one attempt: never past the deadline, but never below the last attempt's."""
        if deadline is None:
            return timeout
        left = max(deadline.left(), LAST_ATTEMPT_SECONDS)
        return min(timeout[0], left), min(timeout[1], left)

    def _wait(self, attempt: int, retry_after: float | None, cause: str, error: ZImageError,
              cancel_check: Callable[[], bool] | None, deadline: Deadline | None,
              on_retry: RetryCallback | None) -> None:
        """Sleep before the next attempt; raise ``error`` (out of time) when the deadline leaves no room for it."""
        delay = delay_for(self.retry, attempt, retry_after=retry_after, rng=self.rng)
        if deadline is not None:
            left = deadline.left()
            if left <= 0:
                raise _out_of_time(error)
            if delay > left:
                if retry_after is not None:
                    raise _past_deadline(error, self.provider.name, cause, retry_after, left, self.now())
                delay = left  # the last attempt goes out at the deadline
        notice = RetryNotice(self.provider.name, cause, delay, attempt + 1, self.retry.max_attempts)
        logger.info("%s", notice)
        if on_retry is not None:
            on_retry(notice)
        if sleep_unless(cancel_check, delay, self.sleep):
            raise CancelledError(f"Cancelled while waiting to retry a request to {self.provider.name}.")

    def _connection_error(self, err: Exception, failure: Failure, what: str, repeatable: bool,
                          method: str) -> APIConnectionError:
        name = self.provider.name
        reason = "read timeout" if failure is Failure.READ_TIMEOUT else _reason(err)
        cls = APITimeoutError if failure is Failure.READ_TIMEOUT else APIConnectionError
        if failure is Failure.CONNECT:
            return APIConnectionError(
                f"Could not connect to {name} at {self.base_url} ({_reason(err)}); check the network, proxy settings "
                f"or {self.provider.base_url_env}. Nothing was sent.",
                provider=name, reason=reason,
            )
        if repeatable and method == "POST":
            return cls(
                f"The connection to {name} kept failing for {what} ({reason}); it may have reached {name}. "
                "Sending the same request again within 24 hours returns that task instead of paying for a new one.",
                provider=name, may_have_processed=True, reason=reason,
            )
        if repeatable:
            return cls(
                f"The connection to {name} kept failing for {what} ({reason}); try again in a minute.",
                provider=name, may_have_processed=False, reason=reason,
            )
        happened = "did not answer in time" if failure is Failure.READ_TIMEOUT else "dropped the connection"
        return cls(
            f"{name} {happened} after {what} was sent; it may have been processed and charged, so it was not sent "
            f"again. Check your {name} dashboard before re-running.",
            provider=name, may_have_processed=True, reason=reason,
        )


def _out_of_time(error: ZImageError) -> ZImageError:
    error.out_of_time = True
    return error


def utc_clock_time(unix: float) -> str:
    """A unix time as the clock time an artist can read, e.g. "14:03:12 UTC"."""
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%H:%M:%S UTC")


def _past_deadline(error: ZImageError, provider: str, cause: str, retry_after: float, left: float,
                   now: float) -> ZImageError:
    """``error``, reworded: the server asked for a wait that ends after the caller's deadline."""
    error.message = (f"{provider} is {cause} and asked to wait {retry_after:g} s, until "
                     f"{utc_clock_time(now + retry_after)}, but only {max(left, 0.0):.0f} s of the timeout were left, "
                     "so it was not waited for.")
    error.args = (error.message,)
    error.retry_at = now + retry_after
    return _out_of_time(error)


def _status_words(status: int) -> str:
    """How a retryable status reads on a status line: "busy (HTTP 503)"."""
    if status == 429:
        return "rate-limiting (HTTP 429)"
    if status == 503:
        return "busy (HTTP 503)"
    return f"failing (HTTP {status})"


def _failure_words(failure: Failure, err: Exception) -> str:
    if failure is Failure.CONNECT:
        return f"unreachable ({_reason(err)})"
    if failure is Failure.READ_TIMEOUT:
        return "not answering (read timeout)"
    return f"dropped the connection ({_reason(err)})"


def _classify(err: requests.exceptions.RequestException) -> Failure:
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return Failure.CONNECT
    if isinstance(err, requests.exceptions.ReadTimeout):
        return Failure.READ_TIMEOUT
    reason = err.args[0] if err.args else None
    reason = getattr(reason, "reason", reason)
    if isinstance(reason, NewConnectionError):
        return Failure.CONNECT
    return Failure.RESET


def _reason(err: Exception) -> str:
    text = str(err.args[0] if err.args else err)
    for marker in ("Connection refused", "Connection reset", "timed out", "Name or service not known",
                   "Remote end closed", "Connection aborted", "Max retries exceeded"):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(err).__name__


def _path_of(url: str) -> str:
    return urlsplit(url).path


def _retry_after_of(error: APIError, response: requests.Response, now: float) -> float | None:
    if isinstance(error, RateLimitError):
        if error.retry_after is not None:
            return error.retry_after
        if error.reset_at is not None:
            return max(error.reset_at - now, 0.0)
    return parse_retry_after(response.headers.get("Retry-After"), now)


def parse_json(provider: Provider, response: requests.Response) -> Any:
    """The JSON body of a successful response, or an :class:`InvalidResponseError` naming what came instead."""
    try:
        return response.json()
    except (ValueError, requests.exceptions.RequestException) as err:
        raise InvalidResponseError(
            f"{provider.name} answered HTTP {response.status_code} with {_describe_body(response)} instead of the "
            "expected JSON; the service may be having trouble, try again shortly.",
            provider=provider.name, status=response.status_code,
        ) from err


def _describe_body(response: requests.Response) -> str:
    text = response.text[:200].lstrip().lower()
    if not text:
        return "an empty body"
    if text.startswith(("<!doctype html", "<html")) or "<body" in text:
        return "an HTML page"
    if text.startswith(("{", "[")):
        return "cut-off or malformed JSON"
    return "unexpected text"


def _error_fields(body: Any) -> tuple[str, str | None, str | None, float | None]:
    """(message, code, param, reset_at) from any of the providers' error shapes."""
    message, code, param, reset_at = "", None, None, None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            code = err.get("code") or err.get("type")
            param = err.get("param")
            reset_at = err.get("reset_at")
        elif isinstance(err, str) and err:
            message = err
        if not message:
            message = str(body.get("message") or body.get("detail") or "")
        reset_at = reset_at if reset_at is not None else body.get("reset_at")
        if code is None and isinstance(body.get("code"), str):
            code = body["code"]
    try:
        reset = float(reset_at) if reset_at is not None else None
    except (TypeError, ValueError):
        reset = None
    if reset is not None and reset > 1e12:  # milliseconds
        reset /= 1000.0
    return message.strip(), (str(code) if code is not None else None), (str(param) if param else None), reset


def _redacted(body: Any) -> Any:
    """The provider's body with any echoed key masked (it is kept on the error for debugging)."""
    text = jsonlib.dumps(body, ensure_ascii=False)
    cleaned = redact(text)
    return body if cleaned == text else jsonlib.loads(cleaned)


def error_from_response(provider: Provider, response: requests.Response, *, now: float | None = None) -> APIError:
    """Map an error response to a typed :class:`APIError` whose message is one sentence for the artist."""
    status = response.status_code
    name = provider.name
    request_id = response.headers.get("x-request-id") or response.headers.get("x-trace-id")
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if body is None:
        what = _describe_body(response)
        return InvalidResponseError(
            f"{name} answered HTTP {status} with {what}"
            + (" (a gateway or proxy error)" if what == "an HTML page" else "")
            + "; the service may be down or overloaded, try again shortly.",
            provider=name, status=status, request_id=request_id,
        )
    body = _redacted(body)
    message, code, param, reset_at = _error_fields(body)
    detail = redact(message)[:300] if message else ""
    said = f": {detail}" if detail else ""
    kwargs: dict[str, Any] = dict(provider=name, status=status, code=code, param=param, request_id=request_id,
                                  body=body)
    if status in (401, 403):
        envs = " or ".join(provider.key_envs)
        # The provider's own words ("Invalid API key...") add nothing here: they stay in ``body``.
        return AuthenticationError(
            f"{name} rejected the API key (HTTP {status}); check {envs} or api_key under "
            f"[{provider.section}] in {config_path()}.", **kwargs)
    if status == 402:
        return PaymentRequiredError(
            f"{name} says the account balance is too low (HTTP 402{said}); top up the account and run again.",
            **kwargs)
    if status in (400, 409, 413, 415, 422):
        field = f" the parameter '{param}'" if param else " the request"
        return BadRequestError(f"{name} rejected{field} (HTTP {status}{said}).", **kwargs)
    if status in (404, 410):
        return NotFoundError(f"{name} could not find it (HTTP {status}{said}).", **kwargs)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now if now is not None else time.time())
        when = ""
        if reset_at is not None:
            when = " The quota window resets at " + utc_clock_time(reset_at) + "."
        elif retry_after is not None:
            when = f" Retry after {retry_after:g} s."
        return RateLimitError(f"{name} is rate-limiting this key (HTTP 429{said}).{when}", retry_after=retry_after,
                              reset_at=reset_at, **kwargs)
    if status >= 500:
        return ServerError(f"{name} had a server error (HTTP {status}{said}); try again in a minute.", **kwargs)
    return APIError(f"{name} answered HTTP {status}{said}.", **kwargs)
