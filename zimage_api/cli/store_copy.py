"""``store copy``: copy this machine's task store (its data folder's SQLite store) into the shared PostgreSQL one."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..store import STORE_URL_ENV, Store, default_dir, store_url
from ..store.sqlite import STORE_NAME
from .runtime import EXIT_OK, UsageError, to_stderr, to_stdout

__all__ = ["run_store", "copy_to_shared"]

_URL_SCHEMES = ("postgresql://", "postgres://")


def run_store(args: argparse.Namespace) -> int:
    """``store ACTION``: only ``copy`` so far."""
    return copy_to_shared(to=args.to, source=args.source)


def copy_to_shared(*, to: str | None = None, source: Path | None = None) -> int:
    """Copy the store of ``source`` (default: the data folder) into the PostgreSQL store at ``to`` (default: the
    configured store URL), print what was copied, and return the exit code."""
    url = (to or "").strip()
    if not url:
        url = store_url()
        if not url:
            raise UsageError(f"Name the shared store to copy into with --to and its postgresql:// URL (or set "
                             f"{STORE_URL_ENV}); nothing was copied.")
        if not url.startswith(_URL_SCHEMES):
            raise UsageError(f"The store URL set in {STORE_URL_ENV} or [store] url is not a postgresql:// URL; name "
                             "the shared store with --to and its postgresql:// URL; nothing was copied.")
    elif not url.startswith(_URL_SCHEMES):  # never echoed: it may hold a password
        raise UsageError("--to takes the shared store's PostgreSQL URL, one that starts with postgresql://; nothing "
                         "was copied.")
    try:
        import psycopg  # noqa: F401 (only whether it is there)
    except ImportError:
        raise UsageError('Copying into PostgreSQL needs its driver, which is not installed: run `pip install '
                         '"psycopg[binary]"` in this Python; nothing was copied.') from None
    folder = Path(source).expanduser() if source is not None else default_dir()
    local = Store(folder)
    if not local.exists():
        raise UsageError(f"There is no task store in {folder} to copy ({STORE_NAME} is not there); name the data "
                         "folder that holds it with --from.")
    from ..store.copy import copy_store
    from ..store.postgres import PostgresStore

    shared = PostgresStore(url, folder)
    try:
        report = copy_store(local, shared)
    finally:
        shared.close()
        local.close()
    for line in report.unreadable:
        to_stderr(f"warning: {line}")
    to_stdout(report.summary())
    return EXIT_OK
