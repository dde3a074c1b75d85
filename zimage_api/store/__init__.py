"""The task store: every paid task id, its history and pictures, receipts, Idempotency-Keys and claims.

:mod:`.sqlite` is the store in one data folder; :mod:`.schema` its tables; :mod:`.legacy` the one-time import of a
0.1.0 data folder.
"""

from __future__ import annotations

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
    Store,
    StoreError,
    claim_lease,
    default_dir,
    new_owner,
    reuse_enabled,
)

__all__ = ["Store", "StoreError", "Receipt", "Claim", "ClaimOutcome", "LeaseKeeper", "Price", "STORE_NAME",
           "SCHEMA_VERSION", "DATA_DIR_ENV", "LEASE_ENV", "REUSE_ENV", "default_dir", "claim_lease", "new_owner",
           "reuse_enabled", "FINAL_STATUSES", "UNFINISHED_STATUSES", "NO_PICTURE_STATUSES"]
