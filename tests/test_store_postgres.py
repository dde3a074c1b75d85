"""What only the PostgreSQL store has to show: its schema and version, its connections (a pool that survives a
restarted server, a clear refusal when the server is away or the driver is missing), the wake-up of waiters by
NOTIFY, and the provider's slots across machines. The behaviours both stores share run against both in
test_claims.py, test_budget.py and test_receipts.py."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PgAdmin
from zimage_api.store import Price, StoreError, open_store
from zimage_api.store.postgres import PostgresStore
from zimage_api.store.sqlite import SCHEMA_VERSION


@pytest.fixture
def store(pg_url: str, tmp_path: Path) -> Iterator[PostgresStore]:
    made = PostgresStore(pg_url, tmp_path / "data")
    yield made
    made.close()


def test_the_schema_is_created_and_versioned_like_the_sqlite_one(store: PostgresStore, pg_admin: PgAdmin) -> None:
    store.check_writable()
    assert pg_admin.query("SELECT value FROM meta WHERE name = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    tables = {row[0] for row in pg_admin.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
    assert {"tasks", "events", "pictures", "receipts", "receipt_pictures", "idempotency", "claims", "spend",
            "spend_days", "slots", "meta"} <= tables


def test_a_store_of_a_newer_version_sends_nothing(store: PostgresStore, pg_admin: PgAdmin, pg_url: str) -> None:
    store.check_writable()
    pg_admin.query("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match=r"newer version of comfyui-zimage \(schema 99"):
        PostgresStore(pg_url).claim("f1", "me")


def test_open_store_follows_the_url_setting_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "zimage.ini").write_text("[store]\nurl = postgresql://farm@db.invalid:5432/zimage\n")
    assert open_store().where == "postgresql://farm@db.invalid:5432/zimage"
    monkeypatch.setenv("ZIMAGE_STORE_URL", pg_url)
    assert isinstance(open_store(), PostgresStore) and open_store().where.endswith("/zimage_test")
    monkeypatch.setenv("ZIMAGE_STORE_URL", "mysql://nope")
    with pytest.raises(StoreError, match="must start with postgresql://"):
        open_store()


def test_an_unreachable_server_refuses_before_paying_and_never_shows_the_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = PostgresStore(f"postgresql://farm:s3cret-pw@127.0.0.1:{port}/zimage", tmp_path)
    with pytest.raises(StoreError) as caught:
        store.claim("f1", "me", price=Price("wavespeed", "Z-Image-Base", 0.01))
    message = str(caught.value)
    assert f"postgresql://farm@127.0.0.1:{port}/zimage cannot be reached" in message
    assert "nothing was sent" in message and "s3cret" not in message


def test_without_the_driver_a_store_url_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setenv("ZIMAGE_STORE_URL", "postgresql://farm:pw@127.0.0.1:1/zimage")
    with pytest.raises(StoreError) as caught:
        open_store(tmp_path).claim("f1", "me")
    assert 'pip install "psycopg[binary]"' in str(caught.value) and "nothing was sent" in str(caught.value)


def test_a_restarted_server_is_reconnected_to(store: PostgresStore, pg_admin: PgAdmin) -> None:
    store.claim("f1", "me")
    assert pg_admin.connections() >= 1
    # What a restart does to the pool: every connection of the pack is cut.
    pg_admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                   "'comfyui-zimage' AND datname = current_database()")
    assert store.claim("f2", "me").kind == "claimed"  # at once: the first statement finds the cut, a new one works
    pg_admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                   "'comfyui-zimage' AND datname = current_database()")
    assert store.claim_of("f1") is not None  # a read, likewise


def test_a_waiter_is_woken_by_the_release_not_by_its_timeout(store: PostgresStore, pg_url: str,
                                                             tmp_path: Path) -> None:
    other = PostgresStore(pg_url, tmp_path / "other")  # another machine
    assert store.claim("f1", "holder").kind == "claimed"
    assert other.claim("f1", "waiter").kind == "held"
    other.wait(0.01)  # starts its listener
    woke = threading.Event()

    def waiter() -> None:
        other.wait(60.0)
        woke.set()

    thread = threading.Thread(target=waiter, daemon=True)
    started = time.monotonic()
    thread.start()
    time.sleep(0.3)
    assert not woke.is_set()
    store.release("f1", "holder")
    assert woke.wait(10.0), "the release did not wake the waiter"
    assert time.monotonic() - started < 30.0  # far below its own timeout of 60 s
    assert other.claim("f1", "waiter").kind == "claimed"
    other.close()


def test_slots_count_across_machines_and_a_dead_holders_slot_frees_with_its_lease(store: PostgresStore,
                                                                                  pg_url: str) -> None:
    other = PostgresStore(pg_url)
    assert store.take_slot("wavespeed", "a", 2, lease=30, now=1000.0).taken
    assert other.take_slot("wavespeed", "b", 2, lease=30, now=1000.0).taken
    refused = other.take_slot("wavespeed", "c", 2, lease=30, now=1001.0)
    assert not refused.taken and refused.in_flight == 2
    assert other.take_slot("qingbo", "c", 1, lease=30, now=1001.0).taken  # each provider its own limit
    assert store.renew(["slot:wavespeed"], "a", lease=30) == 1
    # "b" died: nothing renews its slot, and it is free once its lease ends.
    assert other.take_slot("wavespeed", "c", 2, lease=30, now=1031.0).taken
    store.free_slot("wavespeed", "a")
    assert store.slots_in_flight("wavespeed", now=1031.0) == 1
    other.close()


def test_a_receipt_keeps_its_pictures_in_the_database(store: PostgresStore, pg_url: str, tmp_path: Path,
                                                      pg_admin: PgAdmin) -> None:
    import io

    from PIL import Image

    from zimage_api.results import GenerationResult

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 60)).save(buffer, format="PNG")
    store.claim("f1", "a")
    store.keep_result("f1", GenerationResult(images=[buffer.getvalue()], provider="wavespeed", protocol="v3",
                                             prompt_sha256="0" * 64, model="Z-Image-Base"), owner="a")
    for kept in (tmp_path / "data" / "receipts").iterdir():
        kept.unlink()  # the paying machine's copy is gone; the store's is the one that counts
    served = PostgresStore(pg_url, tmp_path / "machine-b").load_result("f1")
    assert served is not None and served.images == [buffer.getvalue()]
    assert pg_admin.query("SELECT count(*) FROM receipt_pictures") == [(1,)]
    store.drop_result("f1")
    assert pg_admin.query("SELECT count(*) FROM receipt_pictures") == [(0,)]
