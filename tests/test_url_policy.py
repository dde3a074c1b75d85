"""Where a result URL may lead: the public internet and the API's own host, never the machine or its network."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import requests

from tests.runs import run_task
from zimage_api.config import QINGBO, WAVESPEED
from zimage_api.emulator import Emulator
from zimage_api.errors import URLRefusedError
from zimage_api.http.transport import Transport
from zimage_api.http.urls import check_result_url, display_url, same_origin
from zimage_api.providers.openai_images import ImagesClient
from zimage_api.providers.qingbo_tasks import QingboClient


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


TINY_PNG = _tiny_png()  # another server's picture: only a picture counts as one

API = "https://api.example.com"
PROMPT = "A lighthouse on a cliff at dusk, long exposure, calm sea."
ADVICE = "set ZIMAGE_ALLOW_PRIVATE_URLS=1 if your gateway serves pictures on a private network."


def resolver(*addresses: str):
    """A stand-in for ``socket.getaddrinfo`` that answers ``addresses`` for every name (no DNS is asked)."""
    asked: list[tuple[Any, ...]] = []

    def resolve(host: str, port: Any, *rest: Any) -> list[tuple[Any, ...]]:
        asked.append((host, port))
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0))
                for a in addresses]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(("url", "where"), [
    ("http://127.0.0.1:9000/x.png", "127.0.0.1, a loopback"),
    ("http://10.0.0.1/x.png", "10.0.0.1, a private"),
    ("http://192.168.1.20/x.png", "192.168.1.20, a private"),
    ("http://172.16.0.5/x.png", "172.16.0.5, a private"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local"),
    ("http://0.0.0.0/x.png", "0.0.0.0, an unspecified"),
    ("http://224.0.0.1/x.png", "224.0.0.1, a multicast"),
    ("http://240.0.0.1/x.png", "240.0.0.1, a private"),
    ("http://100.64.0.1/x.png", "100.64.0.1, a non-public"),
    ("http://[::1]:8080/x.png", "::1, a loopback"),
    ("http://[fe80::1]/x.png", "fe80::1, a link-local"),
    ("http://[fc00::1]/x.png", "fc00::1, a private"),
    ("http://[ff02::1]/x.png", "ff02::1, a multicast"),
    ("http://[::]/x.png", "::, an unspecified"),
    ("http://[::ffff:127.0.0.1]/x.png", "::ffff:127.0.0.1, a loopback"),
    ("https://api.example.com:8443/x.png", None),  # same host, another port: not the API
])
def test_addresses_a_picture_never_comes_from_are_refused(url: str, where: str | None) -> None:
    resolve = resolver("127.0.0.1")
    with pytest.raises(URLRefusedError) as info:
        check_result_url(url, API, provider="WaveSpeed", resolve=resolve, environ={})
    if where is not None:
        assert str(info.value) == (f"WaveSpeed gave a result URL on {where} address that pictures never come from, "
                                   f"so it was not fetched; {ADVICE}")
    assert info.value.url == url


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "a loopback"), ("10.1.2.3", "a private"), ("169.254.169.254", "a link-local"), ("::1", "a loopback"),
])
def test_a_name_that_resolves_to_a_private_address_is_refused(address: str, kind: str) -> None:
    resolve = resolver("93.184.216.34", address)  # one bad address among good ones is enough
    with pytest.raises(URLRefusedError) as info:
        check_result_url("https://cdn.example.net/p.png", API, provider="Qingbo", resolve=resolve, environ={})
    assert str(info.value) == (f"Qingbo gave a result URL on cdn.example.net ({address}), {kind} address that "
                               f"pictures never come from, so it was not fetched; {ADVICE}")
    assert resolve.asked == [("cdn.example.net", 443)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", ["ftp://cdn.example.net/p.png", "file:///etc/passwd", "gopher://x/", "//x/p.png",
                                 "data:image/png;base64,iVBORw0KGgo="])
def test_only_http_and_https_are_fetched(url: str) -> None:
    with pytest.raises(URLRefusedError) as info:
        check_result_url(url, API, provider="WaveSpeed", resolve=resolver("93.184.216.34"), environ={})
    assert str(info.value) == (f"WaveSpeed gave a result URL on {url}, which is not an http(s) address, so it was "
                               "not fetched.")


@pytest.mark.parametrize(("url", "environ"), [
    ("https://cdn.example.net/p.png", {}),  # resolves to a public address
    ("http://93.184.216.34/p.png", {}),
    ("https://api.example.com/files/p.png", {}),  # the API's own host and port
    ("https://API.example.com:443/files/p.png", {}),
    ("http://10.0.0.1/p.png", {"ZIMAGE_ALLOW_PRIVATE_URLS": "1"}),  # a gateway on a private network
    ("http://127.0.0.1:9000/p.png", {"ZIMAGE_ALLOW_PRIVATE_URLS": "true"}),
])
def test_public_and_own_urls_pass(url: str, environ: dict[str, str]) -> None:
    check_result_url(url, API, resolve=resolver("93.184.216.34"), environ=environ)


def test_a_private_api_keeps_its_own_pictures() -> None:
    check_result_url("http://10.0.0.7:8080/files/a.png", "http://10.0.0.7:8080/v1", resolve=resolver(), environ={})
    with pytest.raises(URLRefusedError):
        check_result_url("http://10.0.0.7:8081/files/a.png", "http://10.0.0.7:8080/v1", resolve=resolver(),
                         environ={})


def test_origins_and_masked_urls() -> None:
    assert same_origin("https://api.example.com/v1/x", "https://api.example.com:443/y")
    assert not same_origin("http://api.example.com/x", "https://api.example.com/x")
    assert not same_origin("https://api.example.com:8443/x", "https://api.example.com/x")
    assert display_url("https://user:secret@cdn.example.net/p.png?sig=1") == "https://***@cdn.example.net/p.png?sig=1"


class RecordingSession(requests.Session):
    """A real session that also notes every URL it is asked to send to."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(url)
        return super().request(method, url, *args, **kwargs)


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/iam/", "http://10.0.0.1/p.png",
                                 "http://[fd00::1]/p.png"])
def test_metadata_and_private_addresses_are_refused_before_any_connection(emu, clock, url: str) -> None:
    session = RecordingSession()
    transport = Transport(QINGBO, session=session, sleep=clock.sleep)
    with pytest.raises(URLRefusedError):
        transport.download(url)
    assert session.sent == [] and clock.sleeps == []


def test_a_result_url_on_another_local_server_is_refused_with_nothing_sent(emu, clock, monkeypatch) -> None:
    with Emulator(clock=clock) as other:
        token = other._store_file(TINY_PNG, "png")
        elsewhere = f"{other.url}/files/{token}.png"
        emu.inject("POST /v1/images/generations", "status", status=200,
                   body={"created": 1, "data": [{"url": elsewhere}]})
        with pytest.raises(URLRefusedError) as info:
            ImagesClient(sleep=clock.sleep).generate(PROMPT, width=256, height=256, response_format="url")
        assert str(info.value) == (f"WaveSpeed gave a result URL on 127.0.0.1, a loopback address that pictures "
                                   f"never come from, so it was not fetched; {ADVICE}")
        assert other.requests == []
        # localhost is the same machine by another name: it is resolved before connecting
        with pytest.raises(URLRefusedError, match=r"on localhost \(127\.0\.0\.1\), a loopback address"):
            Transport(QINGBO, sleep=clock.sleep).download(elsewhere.replace("127.0.0.1", "localhost"))
        assert other.requests == []

        monkeypatch.setenv("ZIMAGE_ALLOW_PRIVATE_URLS", "1")
        emu.inject("POST /v1/images/generations", "status", status=200,
                   body={"created": 1, "data": [{"url": elsewhere}]})
        result = ImagesClient(sleep=clock.sleep).generate(PROMPT, width=256, height=256, response_format="url")
        assert result.images == [TINY_PNG]
        assert [r.path for r in other.requests] == [f"/files/{token}.png"]
        assert "authorization" not in other.requests[0].headers


def test_a_redirect_to_another_local_server_is_refused_with_nothing_sent(emu, clock, monkeypatch) -> None:
    with Emulator(clock=clock) as other:
        token = other._store_file(TINY_PNG, "png")
        emu.inject("GET /files/*", "redirect", location=f"{other.url}/files/{token}.png")
        client = QingboClient(sleep=clock.sleep, now=clock)
        with pytest.raises(URLRefusedError) as info:
            run_task(client, PROMPT, sleep=clock.sleep, clock=clock)
        assert str(info.value) == (f"Qingbo redirected the request to 127.0.0.1, a loopback address that pictures "
                                   f"never come from, so it was not fetched; {ADVICE}")
        assert other.requests == [] and len(emu.requests_to("GET /files/*")) == 1

        monkeypatch.setenv("ZIMAGE_ALLOW_PRIVATE_URLS", "1")
        emu.inject("GET /files/*", "redirect", location=f"{other.url}/files/{token}.png", status=307)
        task_id = next(iter(emu.tasks))
        result = client.collect(task_id, sleep=clock.sleep, clock=clock)
        assert result.images == [TINY_PNG]
        assert len(other.requests) == 1 and "authorization" not in other.requests[0].headers
        # the key went to the API's own origin only
        assert all("authorization" in r.headers for r in emu.requests_to("GET /files/*"))


def test_redirects_are_followed_five_deep_and_no_further(emu, clock) -> None:
    transport = Transport(WAVESPEED, sleep=clock.sleep)
    emu.inject("GET /files/*", "redirect", times=6, location="/files/aaaa.png")
    with pytest.raises(Exception, match=r"redirected the request more than 5 times, so it was stopped"):
        transport.download(f"{emu.url}/files/start.png")
    assert len(emu.requests_to("GET /files/*")) == 6


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "localhost"])
def test_other_spellings_of_this_machine_are_resolved_and_refused(host: str) -> None:
    # Numeric forms and localhost resolve without any DNS query (inet_aton, /etc/hosts).
    expected = rf"^Qingbo gave a result URL on {host} \((127\.0\.0\.1|::1)\), a loopback"
    with pytest.raises(URLRefusedError, match=expected):
        check_result_url(f"http://{host}:8080/p.png", API, provider="Qingbo", environ={})
