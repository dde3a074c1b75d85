"""The provider clients of one run, made on first use with the run's transport options and shared by its threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import QINGBO, WAVESPEED, Provider
from .store.sqlite import Store

if TYPE_CHECKING:
    from .providers.openai_images import ImagesClient
    from .providers.qingbo_tasks import QingboClient
    from .providers.wavespeed_v3 import WaveSpeedClient

__all__ = ["Clients"]


class Clients:
    """One client per protocol (and per read timeout for ``/v1/images``), recording task ids in ``store``.

    ``store`` is the run's task store, opened once by the entry point (default: the data folder's). ``sleep``,
    ``now`` and ``session`` go to every transport;
    ``api_keys``/``base_urls`` (by config section, ``"wavespeed"``/``"qingbo"``) override the user's configuration.
    """

    def __init__(self, *, store: Store | None = None, sleep: Callable[[float], None] | None = None,
                 now: Callable[[], float] | None = None, session: Any = None, api_keys: dict[str, str] | None = None,
                 base_urls: dict[str, str] | None = None) -> None:
        self.store = store if store is not None else Store.default()
        self._sleep = sleep
        self._now = now
        self.session = session
        self.api_keys = dict(api_keys or {})
        self.base_urls = dict(base_urls or {})
        self._lock = threading.Lock()
        self._made: dict[tuple[str, float | None], Any] = {}

    @property
    def ledger(self) -> Store:
        """The run's store (its name in 0.2)."""
        return self.store

    def transport_options(self, provider: Provider) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self._sleep is not None:
            options["sleep"] = self._sleep
        if self._now is not None:
            options["now"] = self._now
        if self.session is not None:
            options["session"] = self.session
        if self.api_keys.get(provider.section):
            options["api_key"] = self.api_keys[provider.section]
        if self.base_urls.get(provider.section):
            options["base_url"] = self.base_urls[provider.section]
        return options

    def _client(self, kind: str, read_timeout: float | None, make: Callable[[], Any]) -> Any:
        with self._lock:
            client = self._made.get((kind, read_timeout))
            if client is None:
                client = self._made[(kind, read_timeout)] = make()
            return client

    def images(self, read_timeout: float | None = None) -> ImagesClient:
        """The OpenAI-images style client; its calls answer with the pictures, so the timeout is their read timeout."""
        from .providers.openai_images import ImagesClient

        options = self.transport_options(WAVESPEED)
        if read_timeout is not None:
            options["timeout"] = (10.0, float(read_timeout))
        return self._client("images", read_timeout, lambda: ImagesClient(**options))

    def v3(self) -> WaveSpeedClient:
        from .providers.wavespeed_v3 import WaveSpeedClient

        return self._client("v3", None, lambda: WaveSpeedClient(
            store=self.store, **self.transport_options(WAVESPEED)))

    def qingbo(self) -> QingboClient:
        from .providers.qingbo_tasks import QingboClient

        return self._client("qingbo", None, lambda: QingboClient(
            store=self.store, **self.transport_options(QINGBO)))

    def close(self) -> None:
        """Close every client's connections."""
        with self._lock:
            for client in self._made.values():
                client.transport.close()
            self._made.clear()
