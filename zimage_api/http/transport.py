"""The HTTP transport shared by the three protocols: one reused session, retries, and typed errors.

A :class:`Transport` belongs to one provider. It resolves the key and the base URL at every request (so a rotated
key works at once), retries what :mod:`zimage_api.http.retry` allows, and turns every failure into one of the errors of
:mod:`zimage_api.errors` with a sentence an artist can act on.
"""

from __future__ import annotations

import json as jsonlib
import math
import random
import socket
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from .._version import __version__
from ..account import balance_refusal
from ..cancel import sleep_unless
from ..config import Provider, config_path, resolve_api_key, resolve_base_url
from ..errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CancelledError,
    InvalidResponseError,
    NotFoundError,
    RateLimitError,
    ResponseTooLargeError,
    ResultDownloadError,
    ResultDownloadTimeoutError,
    ResultExpiredError,
    ServerError,
    ZImageError,
)
from ..logs import logger, redact
from .deadline import Deadline
from .retry import DEFAULT_POLICY, Failure, RetryNotice, RetryPolicy, delay_for, parse_retry_after, should_retry
from .urls import check_result_url, display_url, host_of, same_origin

__all__ = ["Transport", "USER_AGENT", "error_from_response", "Timeout", "RetryCallback", "utc_clock_time",
           "MAX_JSON_BYTES", "MAX_PICTURE_BYTES", "MAX_ERROR_BODY_BYTES", "MAX_REDIRECTS"]

USER_AGENT = f"comfyui-zimage/{__version__} (+https://github.com/comfyui-zimage/comfyui-zimage)"
Timeout = tuple[float, float]
DEFAULT_TIMEOUT: Timeout = (10.0, 60.0)
FilesFactory = Callable[[], Mapping[str, tuple[str, bytes, str]]]
RetryCallback = Callable[[RetryNotice | None], None]  # a notice before each retry wait; None once a retry succeeded
LAST_ATTEMPT_SECONDS = 1.0  # the time given to the one attempt made at the deadline

# What one answer may weigh. Every body is read in chunks and stopped at its cap, so memory stays bounded whatever
# a server sends: no answer of either service comes near these, and a 2048x2048 PNG is well under 32 MB.
MAX_JSON_BYTES = 64 * 1024 * 1024  # an answer of the API, base64 pictures included
MAX_PICTURE_BYTES = 64 * 1024 * 1024  # one picture at a result URL
MAX_ERROR_BODY_BYTES = 1024 * 1024  # the body of an error status
MAX_REDIRECTS = 5  # hops followed, each checked where it leads
CHUNK_BYTES = 64 * 1024  # one read of a body; the deadline is looked at between reads
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MEGABYTE = 1024 * 1024


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

        ``deadline`` bounds everything: no connect, no body read and no retry wait reaches past it (one last
        attempt goes out at the deadline, with :data:`LAST_ATTEMPT_SECONDS` for its answer). A wait the server asks
        for that ends past it is not waited for: the error says so at once. The error raised then has
        ``out_of_time`` set. ``on_retry`` is told of each retry wait before it starts, and told ``None`` when a
        retried request got its answer.

        Unless ``stream`` is set, the body is read here in chunks, at most :data:`MAX_JSON_BYTES`
        (:class:`ResponseTooLargeError` beyond) and for at most the read timeout of real time even without a
        deadline: a body still arriving then raises :class:`APITimeoutError` saying so. Redirects are followed here,
        at most :data:`MAX_REDIRECTS`, each checked by :func:`~zimage_api.http.urls.check_result_url`; the key goes only
        to the API's own origin.
        """
        cancel = cancel_check or self.cancel_check
        headers = dict(headers or {})
        if repeatable is None:
            repeatable = method.upper() == "GET" or any(k.lower() == "idempotency-key" for k in headers)
        if auth:
            headers["Authorization"] = f"Bearer {self.api_key()}"
        url = self.url(path)
        base = timeout or self.timeout
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = self._send(method, url, headers, json, data, files,
                                      lambda: self._attempt_timeout(base, deadline))
                if not stream or response.status_code >= 400:
                    cap = MAX_JSON_BYTES if response.status_code < 400 else MAX_ERROR_BODY_BYTES
                    self._read_body(response, cap, _Budget(deadline, base[1]), what=what, repeatable=repeatable,
                                    method=method.upper())
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

    def download(self, url: str, *, what: str = "the result picture", deadline: Deadline | None = None,
                 urls: list[str] | None = None) -> bytes:
        """Fetch a result picture of a paid request, bounded in time and size.

        The URL (and every redirect) is checked before anything connects to it (see
        :func:`zimage_api.http.urls.check_result_url`). The key is sent only to the provider's own origin, never to a
        storage/CDN host. ``deadline`` bounds the whole download, retries included; without one, the transport's
        read timeout does. A truncated body is fetched once more; an expired URL raises
        :class:`ResultExpiredError`; a download that fails otherwise raises :class:`ResultDownloadError` (naming
        the result host, carrying ``urls``, default ``[url]``, to download again at no new charge).
        """
        name = self.provider.name
        check_result_url(url, self.base_url, provider=name)
        deadline = deadline or Deadline.after(self.timeout[1])
        urls = list(urls) if urls is not None else [url]
        host = host_of(url)
        for attempt in (1, 2):
            try:
                response = self.request("GET", url, auth=same_origin(url, self.base_url), what=what, stream=True,
                                        deadline=deadline)
            except NotFoundError as err:
                raise ResultExpiredError(
                    f"{name}'s result URL has expired or no longer exists (HTTP {err.status}); "
                    "the picture cannot be downloaded any more.",
                    provider=name, status=err.status, code=err.code, body=err.body,
                ) from err
            except APIError as err:
                if err.status in (403, 410):
                    raise ResultExpiredError(
                        f"{name}'s result URL has expired (HTTP {err.status}); "
                        "the picture cannot be downloaded any more.",
                        provider=name, status=err.status, code=err.code, body=err.body,
                    ) from err
                raise
            except APITimeoutError as err:
                raise self._download_failed(
                    f"{host} did not send {what} in time ({err.reason or 'read timeout'})", url, urls, err,
                    timed_out=True) from err
            except APIConnectionError as err:
                raise self._download_failed(f"Could not download {what} from {host} ({err.reason})", url, urls,
                                            err) from err
            try:
                content: bytes | None = self._read_body(response, MAX_PICTURE_BYTES, _Budget(deadline, self.timeout[1]),
                                                        what=what, download_url=url)
            except requests.exceptions.ReadTimeout as err:
                raise self._download_failed(f"{host} stopped sending {what} (read timeout)", url, urls, err,
                                            timed_out=True) from err
            except requests.exceptions.RequestException:
                content = None
            except APITimeoutError as err:
                raise self._download_failed(err.message, url, urls, err, timed_out=True) from err
            expected = response.headers.get("Content-Length")
            if content is not None and (expected is None or not expected.isdigit() or int(expected) == len(content)):
                if _is_html(response, content):
                    raise self._download_failed(f"{host} sent an HTML page instead of {what}",
                                                url, urls, None)
                return content
            logger.warning("download of %s was truncated (attempt %d)", _path_of(url), attempt)
        raise self._download_failed(f"The download of {what} from {host} was cut off twice", url, urls, None)

    def download_all(self, urls: list[str], *, what: str = "the result picture",
                     deadline: Deadline | None = None) -> list[bytes]:
        """:meth:`download` each of ``urls`` under one deadline; a failure carries all of ``urls``."""
        deadline = deadline or Deadline.after(self.timeout[1])
        return [self.download(url, what=what, deadline=deadline, urls=urls) for url in urls]

    # -- internals ------------------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, headers: dict[str, str], json: Any, data: Mapping[str, Any] | None,
              files: FilesFactory | None, timeout: Callable[[], Timeout]) -> requests.Response:
        """One attempt: send, and follow up to :data:`MAX_REDIRECTS` redirects, checking where each one leads.

        The key goes only to the API's own origin (scheme, host and port); a 303, or a 301/302 of a POST, turns
        into a GET without a body, as browsers do.
        """
        api = self.base_url
        for hop in range(MAX_REDIRECTS + 1):
            sent = headers if same_origin(url, api) else {k: v for k, v in headers.items()
                                                          if k.lower() != "authorization"}
            response = self.session.request(method, url, headers=sent, json=json, data=data,
                                            files=files() if files else None, timeout=timeout(), stream=True,
                                            allow_redirects=False)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            response.close()
            if hop == MAX_REDIRECTS:
                raise InvalidResponseError(
                    f"{self.provider.name} redirected the request more than {MAX_REDIRECTS} times, so it was stopped; "
                    "the service may be misconfigured, try again later.",
                    provider=self.provider.name, status=response.status_code)
            url = urljoin(url, location)
            check_result_url(url, api, provider=self.provider.name, hop="redirected the request to")
            status = response.status_code
            if (status == 303 and method.upper() != "HEAD") or (status in (301, 302) and method.upper() == "POST"):
                method, json, data, files = "GET", None, None, None
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_body(self, response: requests.Response, cap: int, budget: _Budget, *, what: str,
                   repeatable: bool = True, method: str = "GET", download_url: str | None = None) -> bytes:
        """Read the body in chunks into ``response`` (so ``.json()`` and ``.content`` work), and return it.

        Stops at ``cap`` bytes (:class:`ResponseTooLargeError`) and when ``budget`` runs out (:class:`APITimeoutError`
        saying what was seen). A broken or stalled connection raises the ``requests`` exception that names it.
        """
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            response.close()
            raise self._too_large(response, cap, what, download_url)
        chunks: list[bytes] = []
        size = 0
        raw = response.raw
        sock = _socket_of(response)
        original = sock.gettimeout() if sock is not None else None
        try:
            while True:
                left = budget.left()
                if left <= 0:
                    response.close()
                    raise self._still_sending(budget, size, what, repeatable, method, download_url)
                if sock is not None:
                    _set_timeout(sock, min(left, budget.read_timeout))
                try:
                    chunk = raw.read1(CHUNK_BYTES, decode_content=True)
                except urllib3.exceptions.ReadTimeoutError as err:
                    response.close()
                    if budget.left() <= 0.05:
                        raise self._still_sending(budget, size, what, repeatable, method, download_url) from err
                    raise requests.exceptions.ReadTimeout(err) from err
                except (urllib3.exceptions.HTTPError, OSError) as err:
                    response.close()
                    raise requests.exceptions.ConnectionError(err) from err
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    response.close()
                    raise self._too_large(response, cap, what, download_url)
                chunks.append(chunk)
        finally:
            if sock is not None:
                _set_timeout(sock, original)
        body = b"".join(chunks)
        response._content = body
        response._content_consumed = True
        return body

    def _too_large(self, response: requests.Response, cap: int, what: str,
                   download_url: str | None) -> ResponseTooLargeError:
        name = self.provider.name
        limit = f"{cap // _MEGABYTE} MB" if cap >= _MEGABYTE else f"{cap // 1024} kB"
        if download_url is not None:
            return ResponseTooLargeError(
                f"{host_of(download_url)} sent more than {limit} for {what}, far more than any picture, so the "
                "download was stopped there.",
                limit=cap, url=display_url(download_url), provider=name, status=response.status_code)
        return ResponseTooLargeError(
            f"{name} answered HTTP {response.status_code} with more than {limit} for {what}, far more than any "
            "answer of the service, so it was stopped there; the service may be having trouble, try again shortly.",
            limit=cap, provider=name, status=response.status_code)

    def _still_sending(self, budget: _Budget, size: int, what: str, repeatable: bool, method: str,
                       download_url: str | None) -> APITimeoutError:
        """The error of a body still arriving when its time ran out: who was sending, for how long, what it means."""
        name = self.provider.name
        sender = host_of(download_url) if download_url is not None else name
        lead = f"{sender} was still sending its answer after {budget.seconds():g} s ({_amount(size)} received)"
        if download_url is not None:
            rest = ""
        elif repeatable:
            rest = "; try again in a minute, or give it a longer timeout."
        else:
            rest = (f"; {what} may have been processed and charged, so it was not sent again. Check your {name} "
                    "dashboard before re-running.")
        error = APITimeoutError(lead + rest, provider=name, may_have_processed=method != "GET",
                                reason="still sending")
        error.out_of_time = budget.by_deadline()
        return error

    def _download_failed(self, lead: str, url: str, urls: list[str], cause: Exception | None, *,
                         timed_out: bool = False) -> ResultDownloadError:
        """A paid picture that could not be fetched: say so truthfully, name the result host, keep the URLs."""
        cls = ResultDownloadTimeoutError if timed_out else ResultDownloadError
        error = cls(f"{lead}; the request was paid, so its picture is kept as a URL to download again on the next "
                    "run at no new charge.",
                    url=display_url(url), urls=urls, provider=self.provider.name,
                    reason=getattr(cause, "reason", "") or ("read timeout" if timed_out else "download failed"))
        error.out_of_time = bool(getattr(cause, "out_of_time", False))
        return error

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


class _Budget:
    """When one body must be in: the caller's deadline (at least :data:`LAST_ATTEMPT_SECONDS` from now, as the
    attempt's own timeout), and never more than the read timeout of real time, whatever clock the deadline has."""

    def __init__(self, deadline: Deadline | None, read_timeout: float) -> None:
        self.deadline = deadline
        self.read_timeout = read_timeout
        self.real_at = time.monotonic() + read_timeout
        self.at: float | None = None
        if deadline is not None:
            now = deadline.clock()
            self.at = now + max(deadline.at - now, LAST_ATTEMPT_SECONDS)

    def left(self) -> float:
        left = self.real_at - time.monotonic()
        if self.deadline is not None and self.at is not None:
            left = min(left, self.at - self.deadline.clock())
        return left

    def by_deadline(self) -> bool:
        """Whether the caller's deadline, rather than the read timeout, is what ran out."""
        return (self.deadline is not None and self.at is not None and self.at - self.deadline.clock()
                <= self.real_at - time.monotonic())

    def seconds(self) -> float:
        """The time the body was given, as the caller knows it: their timeout, or the read timeout."""
        if self.by_deadline() and self.deadline is not None and self.deadline.seconds > 0:
            return round(self.deadline.seconds, 1)
        return round(self.read_timeout, 1)


def _amount(size: int) -> str:
    if size >= _MEGABYTE:
        return f"{size / _MEGABYTE:.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.1f} kB"
    return f"{size} bytes" if size != 1 else "1 byte"


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket a streamed body arrives on, so each read can be bounded by the time left (None if hidden)."""
    sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _set_timeout(sock: socket.socket, seconds: float | None) -> None:
    try:
        sock.settimeout(max(seconds, 0.01) if seconds is not None else None)
    except OSError:
        pass


def _is_html(response: requests.Response, content: bytes) -> bool:
    kind = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    head = content[:200].lstrip().lower()
    return kind == "text/html" or head.startswith((b"<!doctype html", b"<html"))


def _out_of_time(error: ZImageError) -> ZImageError:
    error.out_of_time = True
    return error


def utc_clock_time(unix: float) -> str:
    """A unix time as the clock time an artist can read, e.g. "14:03:12 UTC" (a time out of range is clamped)."""
    if not math.isfinite(unix):
        unix = _LATEST_UNIX if unix > 0 else 0.0
    try:
        return datetime.fromtimestamp(min(max(unix, 0.0), _LATEST_UNIX), timezone.utc).strftime("%H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "an unknown time"


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
    except (ValueError, RecursionError, requests.exceptions.RequestException) as err:
        raise InvalidResponseError(
            f"{provider.name} answered HTTP {response.status_code} with {_describe_body(response)} instead of the "
            "expected JSON; the service may be having trouble, try again shortly.",
            provider=provider.name, status=response.status_code,
        ) from err


def _describe_body(response: requests.Response) -> str:
    text = response.content[:200].decode("utf-8", "replace").lstrip().lower()
    if not text:
        return "an empty body"
    if text.startswith(("<!doctype html", "<html")) or "<body" in text:
        return "an HTML page"
    if text.startswith(("{", "[")):
        return "cut-off or malformed JSON"
    return "unexpected text"


# The latest time a provider's reset_at is taken at: 9999-12-31, the last second a clock time can show.
_LATEST_UNIX = 253_402_300_799.0


def _scalar(value: Any) -> str | None:
    """A code or a field name as text; a nested object or list (never meant for an artist) is dropped."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _unix_time(value: Any) -> float | None:
    """A provider's ``reset_at`` as unix seconds (milliseconds accepted), clamped; None when it is not a time."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        reset = float(value)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(reset) or reset <= 0:
        return None
    if reset > 1e12:  # milliseconds
        reset /= 1000.0
    return min(reset, _LATEST_UNIX)


def _error_fields(body: Any) -> tuple[str, str | None, str | None, float | None]:
    """(message, code, param, reset_at) from any of the providers' error shapes; never raises."""
    message, code, param, reset_at = "", None, None, None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            said = err.get("message")
            message = said if isinstance(said, str) else ""
            code = _scalar(err.get("code")) or _scalar(err.get("type"))
            param = _scalar(err.get("param"))
            reset_at = err.get("reset_at")
        elif isinstance(err, str) and err:
            message = err
        if not message:
            message = next((v for v in (body.get("message"), body.get("detail")) if isinstance(v, str) and v), "")
        reset_at = reset_at if reset_at is not None else body.get("reset_at")
        if code is None and isinstance(body.get("code"), str):
            code = body["code"] or None
    return message.strip(), code, param, _unix_time(reset_at)


def _redacted(body: Any) -> Any:
    """The provider's body with any echoed key masked (it is kept on the error for debugging)."""
    try:
        text = jsonlib.dumps(body, ensure_ascii=False)
        cleaned = redact(text)
        return body if cleaned == text else jsonlib.loads(cleaned)
    except (ValueError, RecursionError):
        return None


def error_from_response(provider: Provider, response: requests.Response, *, now: float | None = None) -> APIError:
    """Map an error response to a typed :class:`APIError` whose message is one sentence for the artist."""
    status = response.status_code
    name = provider.name
    request_id = response.headers.get("x-request-id") or response.headers.get("x-trace-id")
    try:
        body: Any = response.json()
    except (ValueError, RecursionError):
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
        return balance_refusal(name, sent=True, detail=detail, **kwargs)
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
