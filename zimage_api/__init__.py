"""zimage_api: Z-Image at WaveSpeed (OpenAI-images style and v3) and at Qingbo, with the pack's money rules.

Everything that pays goes through the engine, which claims each picture in the store before paying for it, serves
the same inputs from their receipt, keeps every task id and holds the day's budget:

    from zimage_api.clients import Clients
    from zimage_api.engine import Engine
    from zimage_api.orders import TextToImage

    [outcome] = Engine(Clients()).pictures(TextToImage("a ceramic mug on a linen table", seed=42))
    open("mug.png", "wb").write(outcome.value.images[0])

Importing the package is cheap: the clients, and the HTTP and picture libraries behind them, load on first use. The
protocol clients (``ImagesClient``, ``WaveSpeedClient``, ``QingboClient``) speak one request each and keep no
receipts: use them to talk to a service directly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import *  # noqa: F401,F403  (the error types are light and always wanted)
from .errors import __all__ as _error_names

if TYPE_CHECKING:
    from .http.retry import RetryPolicy
    from .polling import PollSchedule, TaskState
    from .providers.openai_images import ImagesClient
    from .providers.qingbo_tasks import QingboClient, QingboTask
    from .providers.wavespeed_v3 import Prediction, WaveSpeedClient
    from .results import GenerationResult
    from .store.sqlite import Store
    from .store.sqlite import Store as Ledger

_LAZY = {
    "ImagesClient": "providers.openai_images",
    "WaveSpeedClient": "providers.wavespeed_v3",
    "Prediction": "providers.wavespeed_v3",
    "QingboClient": "providers.qingbo_tasks",
    "QingboTask": "providers.qingbo_tasks",
    "GenerationResult": "results",
    "Ledger": "ledger",
    "Store": "store",
    "RetryPolicy": "http.retry",
    "PollSchedule": "polling",
    "TaskState": "polling",
}

__all__ = ["__version__", *_LAZY, *_error_names]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zimage_api' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
