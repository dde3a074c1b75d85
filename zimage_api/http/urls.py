"""Where a URL a server handed over may lead: result pictures and redirects stay on the public internet.

A result URL (and every redirect hop) comes from a server, so it is untrusted: it could point the client at the
machine itself, the local network or a cloud metadata service, and have whatever answers there saved as a picture.
:func:`check_result_url` refuses such a URL before anything connects to it. The API's own host and port stay
allowed (a gateway or the local emulator serves its pictures there), and ``ZIMAGE_ALLOW_PRIVATE_URLS=1`` allows
private addresses for a gateway on a private network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

from ..errors import URLRefusedError

__all__ = ["check_result_url", "same_origin", "origin_of", "address_kind", "display_url", "ALLOW_PRIVATE_ENV"]

ALLOW_PRIVATE_ENV = "ZIMAGE_ALLOW_PRIVATE_URLS"
Resolver = Callable[..., list[tuple[Any, ...]]]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, lower-case, with the scheme's default port filled in."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def same_origin(url: str, other: str) -> bool:
    """Whether both URLs share scheme, host and port: only then may the key travel from one to the other."""
    return origin_of(url) == origin_of(other)


def display_url(url: str) -> str:
    """``url`` with any user name and password in it masked, as it may appear in an error or a log."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return SplitResult(parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment).geturl()


def host_of(url: str) -> str:
    """The ``host:port`` part of ``url`` without credentials, as an error names a server."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1] or url


def address_kind(address: str) -> str | None:
    """Why ``address`` (an IP literal) is no place for a result picture, e.g. ``"a loopback"``; None when public."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, kind in (("is_unspecified", "an unspecified"), ("is_loopback", "a loopback"),
                       ("is_link_local", "a link-local"), ("is_multicast", "a multicast"),
                       ("is_private", "a private"), ("is_reserved", "a reserved")):
        if getattr(ip, test):
            return kind
    if not ip.is_global:
        return "a non-public"
    return None


def _private_allowed(environ: Mapping[str, str] | None) -> bool:
    value = (os.environ if environ is None else environ).get(ALLOW_PRIVATE_ENV, "").strip().lower()
    return value in ("1", "true", "yes", "on")


def check_result_url(url: str, api_base_url: str, *, provider: str = "The service", hop: str = "gave a result URL on",
                     resolve: Resolver = socket.getaddrinfo, environ: Mapping[str, str] | None = None) -> None:
    """Refuse ``url`` (raise :class:`URLRefusedError`) unless it may be fetched; nothing connects to it here.

    It must be http(s). Unless it is on the API's own host and port, or ``ZIMAGE_ALLOW_PRIVATE_URLS=1`` is set, its
    host must not be, or resolve to, a loopback, private, link-local, multicast, reserved or unspecified address.
    ``hop`` says in the message what the provider did with the URL ("gave a result URL on", "redirected the
    request to"). A host that does not resolve is left to the connection to report.
    """
    shown = display_url(url)
    scheme, host, port = origin_of(url)
    if scheme not in ("http", "https") or not host:
        raise URLRefusedError(
            f"{provider} {hop} {shown[:80]}, which is not an http(s) address, so it was not fetched.",
            provider=provider, url=shown)
    if origin_of(api_base_url)[1:] == (host, port) or _private_allowed(environ):
        return
    kind = address_kind(host)
    address = host
    if kind is None and address_kind_is_name(host):
        try:
            infos = resolve(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        for info in infos:
            candidate = str(info[4][0])
            kind = address_kind(candidate)
            if kind is not None:
                address = candidate
                break
    if kind is None:
        return
    where = host if address == host else f"{host} ({address})"
    raise URLRefusedError(
        f"{provider} {hop} {where}, {kind} address that pictures never come from, so it was not fetched; "
        f"set {ALLOW_PRIVATE_ENV}=1 if your gateway serves pictures on a private network.",
        provider=provider, url=shown)


def address_kind_is_name(host: str) -> bool:
    """Whether ``host`` is a name to resolve rather than an IP literal."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return True
    return False
