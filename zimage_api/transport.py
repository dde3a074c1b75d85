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
from .config import Provider, config_path, resolve_api_key, resolve_base_url
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InvalidResponseError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitError,
    RequestCancelledError,
    ResultExpiredError,
    ServerError,
)
from .logs import logger, redact
from .polling import sleep_interruptibly
from .retry import DEFAULT_POLICY, Failure, RetryPolicy, delay_for, parse_retry_after, should_retry

__all__ = ["Transport", "USER_AGENT", "error_from_response", "Timeout"]

USER_AGENT = f"comfyui-zimage/{__version__} (+https://github.com/comfyui-zimage/comfyui-zimage)"
Timeout = tuple[float, float]
DEFAULT_TIMEOUT: Timeout = (10.0, 60.0)
FilesFactory = Callable[[], Mapping[str, tuple[str, bytes, str]]]


class Transport:
    """HTTP for one provider.

    ``sleep`` and ``now`` (unix time, for Retry-After dates and ``reset_at``) are injectable so that tests and the
    node layer control waiting. ``cancel_check`` is asked between slices of a retry wait; when it turns true the
    request raises :class:`RequestCancelledError` instead of waiting out a long backoff.
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
    ) -> requests.Response:
        """Send a request with retries and return the successful response.

        ``repeatable`` says the request may be sent twice without a second charge; it defaults to True for GET and
        for requests carrying an ``Idempotency-Key``. ``files`` is a factory, called per attempt, so each retry sends a
        fresh multipart body. ``what`` names the request in error messages ("the image request").
        ``cancel_check`` overrides the transport's own for this request's retry waits.
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
                    timeout=timeout or self.timeout, stream=stream,
                )
            except requests.exceptions.RequestException as err:
                failure = _classify(err)
                if should_retry(self.retry, attempt, failure, repeatable=repeatable):
                    self._wait(attempt, None, f"{method} {_path_of(url)} failed ({failure.value})", cancel)
                    continue
                raise self._connection_error(err, failure, what, repeatable, method.upper()) from err
            if response.status_code < 400:
                logger.debug("%s %s -> %s in %.2fs", method, _path_of(url), response.status_code,
                             time.monotonic() - started)
                return response
            error = error_from_response(self.provider, response, now=self.now())
            retry_after = _retry_after_of(error, response, self.now())
            if (isinstance(error, RateLimitError) and retry_after is not None
                    and retry_after > self.retry.max_retry_after):
                raise error
            if should_retry(self.retry, attempt, Failure.STATUS, status=response.status_code, repeatable=repeatable):
                response.close()
                self._wait(attempt, retry_after, f"{method} {_path_of(url)} answered {response.status_code}", cancel)
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

    def _wait(self, attempt: int, retry_after: float | None, reason: str,
              cancel_check: Callable[[], bool] | None) -> None:
        delay = delay_for(self.retry, attempt, retry_after=retry_after, rng=self.rng)
        logger.info("%s; retry %d/%d in %.2fs", reason, attempt, self.retry.max_attempts - 1, delay)
        if cancel_check is None:
            self.sleep(delay)
        elif sleep_interruptibly(delay, sleep=self.sleep, cancel_check=cancel_check):
            raise RequestCancelledError(f"Cancelled while waiting to retry a request to {self.provider.name}.")

    def _connection_error(self, err: Exception, failure: Failure, what: str, repeatable: bool,
                          method: str) -> APIConnectionError:
        name = self.provider.name
        if failure is Failure.CONNECT:
            return APIConnectionError(
                f"Could not connect to {name} at {self.base_url} ({_reason(err)}); check the network, proxy settings "
                f"or {self.provider.base_url_env}. Nothing was sent.",
                provider=name,
            )
        if repeatable and method == "POST":
            return APIConnectionError(
                f"The connection to {name} kept failing for {what} ({_reason(err)}); it may have reached {name}. "
                "Sending the same request again within 24 hours returns that task instead of paying for a new one.",
                provider=name, may_have_processed=True,
            )
        if repeatable:
            return APIConnectionError(
                f"The connection to {name} kept failing for {what} ({_reason(err)}); try again in a minute.",
                provider=name, may_have_processed=False,
            )
        cls = APITimeoutError if failure is Failure.READ_TIMEOUT else APIConnectionError
        happened = "did not answer in time" if failure is Failure.READ_TIMEOUT else "dropped the connection"
        return cls(
            f"{name} {happened} after {what} was sent; it may have been processed and charged, so it was not sent "
            f"again. Check your {name} dashboard before re-running.",
            provider=name, may_have_processed=True,
        )


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
            when = " The quota window resets at " + datetime.fromtimestamp(reset_at, timezone.utc).strftime(
                "%H:%M:%S UTC") + "."
        elif retry_after is not None:
            when = f" Retry after {retry_after:g} s."
        return RateLimitError(f"{name} is rate-limiting this key (HTTP 429{said}).{when}", retry_after=retry_after,
                              reset_at=reset_at, **kwargs)
    if status >= 500:
        return ServerError(f"{name} had a server error (HTTP {status}{said}); try again in a minute.", **kwargs)
    return APIError(f"{name} answered HTTP {status}{said}.", **kwargs)
