"""``store copy``: a machine's SQLite store copied into the shared PostgreSQL store, once, whatever the re-runs; and
``tasks``, ``tasks resume`` and ``spend`` on the shared store."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import FakeClock, PgAdmin
from zimage_api.emulator import DEMO_KEY, Emulator
from zimage_api.store import STORE_URL_ENV, Price, Store
from zimage_api.store.copy import CopyReport, copy_store
from zimage_api.store.postgres import PostgresStore
from zimage_api.store.sqlite import SQL_META

CLI = Callable[..., tuple[int, str, str]]
V3 = ("--api", "v3", "--width", "256", "--height", "256")
TABLES = ("tasks", "events", "pictures", "receipts", "receipt_pictures", "idempotency", "claims", "spend", "spend_days",
          "meta")


@pytest.fixture
def clock() -> FakeClock:
    """The fake clock an hour ahead of the real one: the store stamps real time, ``spend`` counts up to the CLI's
    now, so what was just paid is in ``spend --since 1d``."""
    return FakeClock(time.time() + 3600)


@pytest.fixture(autouse=True)
def closed_connections() -> Iterator[None]:
    yield
    PostgresStore.close_all()


def password(url: str) -> str:
    return urlsplit(url).password or ""


def counts(pg_admin: PgAdmin) -> dict[str, int]:
    return {table: int(pg_admin.query(f"SELECT count(*) FROM {table}")[0][0]) for table in TABLES}


def kept_pictures(store: Store) -> dict[str, list[str]]:
    """Each receipt with a kept result: the paths of its pictures."""
    return {str(key): json.loads(result)["paths"] for key, result in
            store._read("SELECT fingerprint, result_json FROM receipts WHERE result_json IS NOT NULL")}


def spend_json(cli: CLI) -> dict[str, Any]:
    code, out, err = cli("spend", "--since", "1d", "--json")
    assert code == 0, err
    return dict(json.loads(out))


def a_day_of_work(cli: CLI, emu: Emulator) -> str:
    """What a machine keeps after a day: a v1/images picture, a v3 task, a Qingbo task collected and one still
    queued. The queued one's id."""
    assert cli("generate", "a fox in snow", "--width", "256", "--height", "256", "--seed", "1",
               "--out", "foxes")[0] == 0
    assert cli("generate", "a ceramic mug", *V3, "--seed", "2", "--out", "mugs")[0] == 0
    code, out, err = cli("submit", "a paper boat", "--count", "2", "--seed", "3")
    assert code == 0, err
    done, waiting = out.split()
    assert cli("poll", done, "--out", "boats")[0] == 0
    return waiting


# -- the copy --------------------------------------------------------------------------------------------------------


def test_copy_brings_tasks_receipts_with_their_bytes_and_the_spend_once(cli, emu, pg_url, pg_admin, isolated_env,
                                                                        monkeypatch, tmp_path) -> None:
    waiting = a_day_of_work(cli, emu)
    local = Store(isolated_env)
    receipts = kept_pictures(local)
    assert len(receipts) == 2 and all(receipts.values())  # v1/images and v3; the Qingbo ones hold task ids
    all_receipts = int(local._read("SELECT count(*) FROM receipts")[0][0])
    pictures = {key: local.load_result(key).images for key in receipts}  # type: ignore[union-attr]
    code, tasks_before, _ = cli("tasks", "--json")
    assert code == 0 and len(tasks_before.splitlines()) == 3
    spend_before = spend_json(cli)
    assert spend_before["total_usd"] > 0
    events = int(local._read("SELECT count(*) FROM events")[0][0])
    keys = int(local._read("SELECT count(*) FROM idempotency")[0][0])
    spend_rows = int(local._read("SELECT count(*) FROM spend")[0][0])

    code, out, err = cli("store", "copy", "--to", pg_url)
    assert (code, err) == (0, "")
    assert out == (f"copied 3 tasks ({events} events), {all_receipts} receipts (2 pictures), {keys} "
                   f"Idempotency-Keys, {spend_rows} spend rows; already there: 0 tasks, 0 receipts\n")
    copied = counts(pg_admin)
    assert copied["receipt_pictures"] == 2 and copied["events"] == events and copied["spend"] == spend_rows
    days = local._read("SELECT day, usd FROM spend_days ORDER BY day")
    assert [day for day, _usd in pg_admin.query("SELECT day, usd FROM spend_days ORDER BY day")] == \
        [day for day, _usd in days]
    assert [usd for _day, usd in pg_admin.query("SELECT day, usd FROM spend_days ORDER BY day")] == \
        pytest.approx([usd for _day, usd in days])

    for paths in receipts.values():  # this machine's files are gone: the shared store still serves every receipt
        for path in paths:
            Path(path).unlink()
    shared = PostgresStore(pg_url, tmp_path / "another-machine")
    for key, images in pictures.items():
        served = shared.load_result(key)
        assert served is not None and served.images == images

    monkeypatch.setenv(STORE_URL_ENV, pg_url)
    code, tasks_after, _ = cli("tasks", "--json")
    assert code == 0 and tasks_after == tasks_before
    code, listing, _ = cli("tasks")
    assert code == 0 and waiting in listing and "Unfinished tasks (1" in listing and "127.0.0.1" in listing
    assert spend_json(cli) == spend_before

    code, out, err = cli("store", "copy", "--to", pg_url)  # again: nothing is copied twice
    assert (code, err) == (0, "")
    assert out == ("copied 0 tasks (0 events), 0 receipts (0 pictures), 0 Idempotency-Keys, 0 spend rows; "
                   f"already there: 3 tasks, {all_receipts} receipts\n")
    assert counts(pg_admin) == copied
    assert spend_json(cli) == spend_before

    code, out, err = cli("tasks", "resume", "--out", "later")  # the queued task, collected from the shared store
    assert code == 0, err
    [path] = out.split()
    assert Path(path).read_bytes() == emu.tasks[waiting].outputs[0]
    assert shared.task(waiting)["status"] == "completed"  # type: ignore[index]
    assert DEMO_KEY not in json.dumps(pg_admin.query("SELECT * FROM tasks")) + json.dumps(
        pg_admin.query("SELECT * FROM events"))


def test_copy_store_keeps_the_shared_stores_own_rows_and_counts_only_what_it_brought(isolated_env, pg_url, pg_admin,
                                                                                      tmp_path) -> None:
    local = Store(isolated_env)
    shared = PostgresStore(pg_url, tmp_path / "shared")
    for task_id, status in (("t-both", "queued"), ("t-mine", "submitted"), ("t-mine", "completed")):
        local.record(task_id, {"provider": "qingbo", "status": status, "paths": ["/x/a.png"] if status == "completed"
                               else None})
    shared.record("t-both", {"provider": "qingbo", "status": "completed", "note": "from the other machine"})
    local.save_task("fp-both", "t-both")
    shared.save_task("fp-both", "t-other")
    local.save_task("fp-mine", "t-mine")
    local.note_idempotency_key("fp-mine", "zimage-fp-mine-first")
    local.note_idempotency_key("fp-mine", "zimage-fp-mine-t1")  # the first one is now spent

    report = copy_store(local, shared)
    assert report == CopyReport(tasks=1, events=2, pictures=1, receipts=1, idempotency_keys=2, tasks_there=1,
                                receipts_there=1)
    assert [event["status"] for event in shared.events("t-both")] == ["completed"]  # its own history, kept
    assert shared.task("t-both")["note"] == "from the other machine"  # type: ignore[index]
    assert [event["status"] for event in shared.events("t-mine")] == ["submitted", "completed"]
    assert shared.pictures("t-mine") == [("/x/a.png", None)]
    assert shared.receipt("fp-both").task_id == "t-other"  # type: ignore[union-attr]
    assert shared.idempotency_keys("fp-mine") == [("zimage-fp-mine-first", True), ("zimage-fp-mine-t1", False)]
    assert copy_store(local, shared) == CopyReport(tasks_there=2, receipts_there=2)


def test_uncertain_claims_spend_and_import_notes_are_copied_live_claims_are_not(isolated_env, pg_url, pg_admin,
                                                                                tmp_path) -> None:
    local = Store(isolated_env)
    shared = PostgresStore(pg_url, tmp_path / "shared")
    day = 1_780_000_000.0
    price = Price("qingbo", "z-image-turbo", 0.0106)
    for key in ("paid", "refunded", "given-back", "maybe", "live"):
        assert local.claim(key, "run", price=price, day_start=day, now=day + 10).kind == "claimed"
    local.finish("paid", "run", task_id="t-paid")
    local.finish("refunded", "run", task_id="t-refunded")
    local.record_cost("t-refunded", 0.0)
    local.release("given-back", "run")
    local.mark_uncertain("maybe", "run", {"provider": "qingbo"})
    with local._write() as conn:
        conn.execute(SQL_META, ("imported:ledger.jsonl", json.dumps({"tasks": 4})))
    # The shared store's own day already holds another machine's spend.
    assert shared.claim("elsewhere", "other", price=price, day_start=day, now=day + 20).kind == "claimed"
    shared.finish("elsewhere", "other", task_id="t-elsewhere")

    report = copy_store(local, shared)
    assert (report.spend_rows, report.uncertain_claims, report.notes) == (5, 1, 1)
    assert "1 uncertain request;" in report.summary()
    assert [claim.fingerprint for claim in shared.uncertain_claims()] == ["maybe"]
    assert shared.claim_of("live") is None and shared.claim_of("maybe").detail == {"provider": "qingbo"}  # type: ignore[union-attr]
    assert shared.imports() == {"ledger.jsonl": {"tasks": 4}}
    # paid, maybe and live are still counted (spent or reserved); refunded and given-back were released.
    expected = round(4 * 0.0106, 6)
    assert shared.spend(day, day + 86400) == {"wavespeed": 0.0, "qingbo": expected}
    assert pg_admin.query("SELECT day, round(usd::numeric, 6)::float8 FROM spend_days") == [(day, expected)]
    copy_store(local, shared)
    assert pg_admin.query("SELECT day, round(usd::numeric, 6)::float8 FROM spend_days") == [(day, expected)]


def test_a_receipt_whose_picture_file_is_gone_is_copied_without_bytes_and_reported(cli, emu, pg_url, pg_admin,
                                                                                    isolated_env) -> None:
    assert cli("generate", "a fox", "--width", "256", "--height", "256", "--seed", "1", "--count", "2",
               "--out", "foxes")[0] == 0
    receipts = kept_pictures(Store(isolated_env))
    assert len(receipts) == 2
    gone_key, [gone] = sorted(receipts.items())[0]
    Path(gone).unlink()
    code, out, err = cli("store", "copy", "--to", pg_url)
    assert code == 0
    assert out.startswith("copied 0 tasks (0 events), 2 receipts (1 picture), ")
    assert err == (f"warning: The receipt {gone_key[:16]} was copied without its pictures: {gone} cannot be read "
                   "(No such file or directory), so only this machine serves it.\n")
    assert pg_admin.query("SELECT fingerprint FROM receipt_pictures") == [(sorted(receipts)[1],)]
    assert pg_admin.query("SELECT count(*) FROM receipts") == [(2,)]


def test_the_configured_store_url_is_the_default_target(cli, emu, pg_url, pg_admin, monkeypatch) -> None:
    assert cli("generate", "a mug", *V3, "--seed", "5", "--out", "mugs")[0] == 0
    monkeypatch.setenv(STORE_URL_ENV, pg_url)
    code, out, err = cli("store", "copy")  # from this machine's SQLite store, not from the shared one
    assert code == 0, err
    assert out.startswith("copied 1 task (") and "1 receipt (1 picture)" in out
    assert pg_admin.query("SELECT count(*) FROM tasks") == [(1,)]


# -- what stops it ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["mysql://zimage:s3cret-pw@db.example/zimage", "zimage:s3cret-pw@db.example",
                                "sqlite:///tmp/s3cret-pw.db"])
def test_a_to_that_is_not_postgresql_is_a_usage_error(cli, isolated_env, to: str) -> None:
    Store(isolated_env).check_writable()
    code, out, err = cli("store", "copy", "--to", to)
    assert (code, out) == (2, "")
    assert err == ("error: --to takes the shared store's PostgreSQL URL, one that starts with postgresql://; nothing "
                   "was copied.\n")


def test_an_unreachable_server_is_one_sentence_without_the_password(cli, isolated_env) -> None:
    Store(isolated_env).check_writable()
    code, out, err = cli("store", "copy", "--to", "postgresql://zimage:s3cret-pw@127.0.0.1:1/zimage")
    assert (code, out) == (2, "")
    assert err.startswith("error: The shared task store at postgresql://")
    assert "127.0.0.1:1/zimage cannot be used (" in err
    assert err.endswith("), so nothing was copied; check that the PostgreSQL server is running and that the URL "
                        "names it.\n")
    assert "s3cret" not in err and err.count("\n") == 1


def test_a_wrong_password_does_not_show_it(cli, isolated_env, pg_url) -> None:
    Store(isolated_env).check_writable()
    if not password(pg_url):
        pytest.skip("the test server's URL has no password to get wrong")
    wrong = pg_url.replace(f":{password(pg_url)}@", ":n0t-the-pw@", 1)
    code, out, err = cli("store", "copy", "--to", wrong)
    assert (code, out) == (2, "") and "password authentication failed" in err and "n0t-the-pw" not in err


def test_without_a_target_or_a_store_or_the_driver(cli, isolated_env, monkeypatch) -> None:
    code, out, err = cli("store", "copy")
    assert (code, out) == (2, "")
    assert err == ("error: Name the shared store to copy into with --to and its postgresql:// URL (or set "
                   "ZIMAGE_STORE_URL); nothing was copied.\n")
    monkeypatch.setenv(STORE_URL_ENV, "postgresql://zimage@127.0.0.1:1/zimage")
    code, out, err = cli("store", "copy")
    assert (code, out) == (2, "")
    assert err == (f"error: There is no task store in {isolated_env} to copy (zimage.sqlite3 is not there); name the "
                   "data folder that holds it with --from.\n")
    monkeypatch.setenv(STORE_URL_ENV, "mysql://zimage:s3cret-pw@db.example/zimage")
    code, _, err = cli("store", "copy")
    assert code == 2 and "is not a postgresql:// URL" in err and "s3cret" not in err
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as where the driver is not installed
    code, _, err = cli("store", "copy", "--to", "postgresql://zimage@127.0.0.1:1/zimage")
    assert code == 2 and 'pip install "psycopg[binary]"' in err and "nothing was copied" in err


def test_from_names_another_data_folder(cli, pg_url, pg_admin, tmp_path) -> None:
    other = tmp_path / "old-data"
    Store(other).record("t-old", {"provider": "qingbo", "status": "completed"})
    code, out, err = cli("store", "copy", "--from", str(other), "--to", pg_url)
    assert code == 0, err
    assert out.startswith("copied 1 task (1 event), 0 receipts (0 pictures)")
    assert pg_admin.query("SELECT task_id, status FROM tasks") == [("t-old", "completed")]


# -- the commands on the shared store --------------------------------------------------------------------------------


def test_tasks_and_tasks_resume_on_the_shared_store(cli, emu, pg_url, pg_admin, monkeypatch) -> None:
    monkeypatch.setenv(STORE_URL_ENV, pg_url)
    code, _, err = cli("generate", "slow", *V3, "--timeout", "1")
    [task_id] = list(emu.tasks)
    assert code == 1 and task_id in err
    code, out, _ = cli("tasks")
    assert code == 0 and "Unfinished tasks (1" in out and task_id in out
    assert out.splitlines()[-1].startswith("Ledger: postgresql://") and "@" in out.splitlines()[-1]
    code, out, err = cli("tasks", "resume", "--out", "recovered")
    assert code == 0, err
    [path] = out.split()
    assert Path(path).read_bytes() == emu.tasks[task_id].outputs[0]
    assert pg_admin.query("SELECT status FROM tasks") == [("completed",)]
    code, out, _ = cli("tasks")
    assert "No unfinished tasks." in out and task_id in out


def test_spend_on_the_shared_store(cli, emu, pg_url, pg_admin, monkeypatch) -> None:
    monkeypatch.setenv(STORE_URL_ENV, pg_url)
    assert spend_json(cli)["total_usd"] == 0.0
    assert cli("generate", "a mug", *V3, "--seed", "9", "--out", "mugs")[0] == 0
    spent = spend_json(cli)
    assert spent["by_provider"]["wavespeed"] > 0 and spent["by_provider"]["qingbo"] == 0.0
    assert spent["total_usd"] == pytest.approx(pg_admin.query("SELECT sum(usd) FROM spend")[0][0])


def test_a_copy_that_stops_half_way_says_so_and_the_next_run_finishes_it(cli, isolated_env, pg_url, pg_admin) -> None:
    local = Store(isolated_env)
    local.record("t-1", {"provider": "qingbo", "status": "completed"})
    local.save_task("fp-good", "t-1")
    with local._write() as conn:  # a row PostgreSQL refuses (text with a NUL character)
        conn.execute("INSERT INTO receipts (fingerprint, result_json, created_at) VALUES ('fp-bad', 'a' || char(0), 1)")
    code, out, err = cli("store", "copy", "--to", pg_url)
    assert (code, out) == (2, "")
    assert "127.0.0.1" in err and ") after it copied 1 task (1 event), 0 receipts (0 pictures)" in err
    assert err.endswith("; run it again to copy the rest (nothing is copied twice).\n") and err.count("\n") == 1
    assert not password(pg_url) or password(pg_url) not in err
    assert pg_admin.query("SELECT count(*) FROM receipts") == [(0,)]
    with local._write() as conn:
        conn.execute("DELETE FROM receipts WHERE fingerprint = 'fp-bad'")
    code, out, err = cli("store", "copy", "--to", pg_url)
    assert (code, err) == (0, "")
    assert out.startswith("copied 0 tasks (0 events), 1 receipt (0 pictures), ")
    assert out.endswith("; already there: 1 task, 0 receipts\n")
    assert pg_admin.query("SELECT count(*) FROM events") == [(1,)]
