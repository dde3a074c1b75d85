"""The task store: every paid task id, its history and pictures, receipts, Idempotency-Keys and claims.

:mod:`.sqlite` is the store in one data folder; :mod:`.postgres` the same store in PostgreSQL, shared by the machines
of a farm (``ZIMAGE_STORE_URL``); :mod:`.schema` their tables; :mod:`.legacy` the one-time import of a 0.1.0 data
folder; :mod:`.copy` moves a machine's store into a shared one. :func:`open_store` opens the one configured.
"""

from __future__ import annotations

import os

from ..config import read_setting
from .sqlite import (
    DATA_DIR_ENV,
    FINAL_STATUSES,
    LEASE_ENV,
    NO_PICTURE_STATUSES,
    REUSE_ENV,
    SCHEMA_VERSION,
    STORE_NAME,
    UNFINISHED_STATUSES,
    Claim,
    ClaimOutcome,
    LeaseKeeper,
    Price,
    Receipt,
    Slot,
    Store,
    StoreError,
    claim_lease,
    default_dir,
    new_owner,
    reuse_enabled,
)

STORE_URL_ENV = "ZIMAGE_STORE_URL"


def store_url() -> str:
    """The shared store's URL: ``$ZIMAGE_STORE_URL``, else ``[store] url`` in ``zimage.ini``; empty for none."""
    return os.environ.get(STORE_URL_ENV, "").strip() or read_setting("store", "url").strip()


def open_store(directory: str | os.PathLike[str] | None = None) -> Store:
    """The store this machine is set to use: the shared PostgreSQL store when a store URL is set, else SQLite in
    the data folder (``directory``, else the default one). Opening connects to nothing; the first use does."""
    url = store_url()
    if not url:
        return Store(directory)
    if not url.startswith(("postgresql://", "postgres://")):
        raise StoreError(f"The store URL set in {STORE_URL_ENV} or [store] url must start with postgresql:// "
                         "(a PostgreSQL server shared by the machines of a farm), so nothing was sent; unset it to "
                         "keep the store in the data folder.")
    from .postgres import PostgresStore

    return PostgresStore(url, directory)


__all__ = ["Store", "StoreError", "Slot", "open_store", "store_url", "STORE_URL_ENV", "Receipt", "Claim",
           "ClaimOutcome", "LeaseKeeper", "Price", "STORE_NAME", "SCHEMA_VERSION", "DATA_DIR_ENV", "LEASE_ENV",
           "REUSE_ENV", "default_dir", "claim_lease", "new_owner", "reuse_enabled", "FINAL_STATUSES",
           "UNFINISHED_STATUSES", "NO_PICTURE_STATUSES"]
