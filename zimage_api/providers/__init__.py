"""The paid services as the engine drives them: one protocol (:class:`~.base.Provider`), one adapter per service.

Adding a provider means a module here, its entries in the catalog and the field table, and its line in
:class:`Providers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import PROVIDER_NAMES, ROUTES, Accepted, Call, Handle, Provider, ProviderName, Recovery, Route, Unit

if TYPE_CHECKING:
    from ..account import Funds
    from ..clients import Clients

__all__ = ["Providers", "Provider", "ProviderName", "Route", "PROVIDER_NAMES", "ROUTES", "Call", "Handle", "Recovery",
           "Unit", "Accepted"]


class Providers:
    """The providers of one run, by the route an order takes and by the name a task id is recorded under."""

    def __init__(self, clients: Clients, extra: dict[Route, Provider] | None = None, *,
                 funds: Funds | None = None) -> None:
        from .qingbo import QingboProvider
        from .wavespeed import ImagesProvider, V3Provider

        v3 = V3Provider(clients, funds)
        self.by_route: dict[Route, Provider] = {"wavespeed-images": ImagesProvider(clients, funds), "wavespeed-v3": v3,
                                                "qingbo": QingboProvider(clients)}
        self.by_route.update(extra or {})
        # A task id is collected by the provider that issued it; WaveSpeed's ids are v3 predictions.
        self.by_name: dict[ProviderName, Provider] = {"wavespeed": v3, "qingbo": self.by_route["qingbo"]}

    def route(self, route: Route) -> Provider:
        return self.by_route[route]

    def named(self, name: ProviderName) -> Provider:
        return self.by_name[name]
