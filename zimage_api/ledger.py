"""``Ledger``: the task store's name in 0.1 and 0.2, kept so that scripts written for them still run.

It is :class:`~zimage_api.store.sqlite.Store` itself: every paid task id, recorded the moment the provider issues it.
"""

from __future__ import annotations

from .store.sqlite import DATA_DIR_ENV, FINAL_STATUSES, UNFINISHED_STATUSES, default_dir
from .store.sqlite import Store as Ledger

__all__ = ["Ledger", "default_dir", "DATA_DIR_ENV", "UNFINISHED", "FINISHED"]

UNFINISHED = UNFINISHED_STATUSES
FINISHED = FINAL_STATUSES
