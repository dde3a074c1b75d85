"""The task store in PostgreSQL: one store shared by every ComfyUI and command line of a farm.

Set ``ZIMAGE_STORE_URL=postgresql://user@host:port/db`` (or ``[store] url`` in ``zimage.ini``; the environment wins).
It holds what the SQLite store holds, the pictures of receipts included (so any machine serves them), and it
decides who pays across machines the way the SQLite store does across the processes of one machine:

* every write is one transaction that first takes the store's transaction-level advisory lock, so a claim, the
  budget's reservation that goes with it and a provider's slot are decided as one, as SQLite's write lock does;
  a process that dies mid-transaction releases the lock with its connection;
* a run waiting on another run's claim, or for a provider's slot, is woken by ``NOTIFY`` when it is given back
  (``LISTEN`` on one connection per process), and looks again at the latest when the holder's lease would end;
* connections come from a small pool per process; one found broken (a restarted server) is replaced once before
  the store gives up, and a store that cannot be reached raises :class:`StoreError` before anything is paid.

The driver, psycopg 3, is an optional extra: ``pip install "psycopg[binary]"``.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..logs import logger
from .base import StoreError
from .schema import PG_INDEXES, PG_TABLES, dumps
from .sqlite import SCHEMA_VERSION, SQL_META, Store

if TYPE_CHECKING:
    import psycopg

    from ..results import GenerationResult

__all__ = ["PostgresStore", "driver_reason", "with_schema", "POOL_SIZE", "CHANNEL", "missing_driver_message",
           "store_address"]

POOL_SIZE = 8  # connections per process at most; a run holds one only for one short transaction or query
# NOTIFY'd (as zimage_store_<schema>) with a claim's fingerprint, or slot:<provider>, when one is given back.
CHANNEL = "zimage_store"
IDLE_CHECK_SECONDS = 2.0  # a pooled connection idle longer than this is checked before use
CONNECT_SECONDS = 10  # how long opening a connection may take before the store counts as unreachable
_LOCK_CLASS = 0x5A494D47  # "ZIMG": the advisory lock's first key; the second is the schema's hash

_BEGIN = f"BEGIN; SELECT pg_advisory_xact_lock({_LOCK_CLASS}, hashtext(current_schema()))"
_BEGIN_NOT_DURABLE = _BEGIN + "; SET LOCAL synchronous_commit = off"

_TASK_SELECT = ("SELECT task_id, provider, base_url, model, prompt_sha256, params_json, status, submitted_at, "
                "updated_at, batch_row, extra_json, (SELECT json_agg(path ORDER BY idx)::text FROM pictures p "
                "WHERE p.task_id = tasks.task_id) FROM tasks")
_TOOK = "extra_json::jsonb -> 'took'"
_DURATIONS = (f"SELECT ({_TOOK})::text::float8 FROM tasks WHERE status = 'completed' AND provider = ? AND model = ? "
              f"AND base_url = ? AND jsonb_typeof({_TOOK}) = 'number' ORDER BY seq DESC LIMIT ?")

_OPEN: weakref.WeakSet[PostgresStore] = weakref.WeakSet()


def missing_driver_message() -> str:
    return ("The task store is set to a PostgreSQL URL, but its driver is not installed, so nothing was sent: run "
            '`pip install "psycopg[binary]"` in the Python that runs comfyui-zimage (or install '
            '"zimage-api-nodes[postgres]").')


def store_address(url: str) -> str:
    """The store's URL as messages show it: user, host, port and database, never the password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 (a malformed URL: show none of it rather than risk a password)
        return "postgresql://(a URL that cannot be read)"
    host = str(parts.get("host") or "localhost")
    port = str(parts.get("port") or "5432")
    user = f"{quote(str(parts['user']))}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{quote(str(parts.get('dbname') or ''))}"


def with_schema(url: str, schema: str) -> str:
    """``url`` whose sessions work in ``schema`` (a libpq ``options`` parameter setting the search_path; options
    already in the URL are kept). Farms that share one database keep apart this way, each with its own channel."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = " ".join([value for key, value in query if key == "options"] + [f"-csearch_path={schema}"])
    query = [(key, value) for key, value in query if key != "options"] + [("options", options)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _driver() -> Any:
    try:
        import psycopg
    except ImportError as err:
        raise StoreError(missing_driver_message()) from err
    return psycopg


class _Connection:
    """A psycopg connection that takes the store's SQL as written for SQLite (``?`` placeholders)."""

    _sql: dict[str, str] = {}

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    @classmethod
    def translate(cls, sql: str) -> str:
        done = cls._sql.get(sql)
        if done is None:
            done = cls._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return done

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(self.translate(sql), tuple(args))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(self.translate(sql), [tuple(row) for row in rows])


class _Pool:
    """At most ``size`` connections of one process to one store; idle ones are kept for the next caller."""

    def __init__(self, url: str, unusable: Any, size: int = POOL_SIZE) -> None:
        self.url = url
        self.unusable = unusable
        self.size = size
        self._idle: list[tuple[Any, float]] = []  # (connection, when it was given back)
        self._lock = threading.Lock()
        self._free = threading.BoundedSemaphore(size)
        self.pid = os.getpid()

    def open(self) -> Any:
        psycopg = _driver()
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_SECONDS,
                                   application_name="comfyui-zimage")
        except psycopg.Error as err:
            raise self.unusable("cannot be reached", driver_reason(err, self.url)) from err

    @contextmanager
    def connection(self, *, fresh: bool = False) -> Iterator[tuple[Any, bool]]:
        """One connection for the block, and whether it sat idle long enough to need a check that it still works
        (a restarted server breaks the idle ones); given back afterwards unless it broke."""
        if not self._free.acquire(timeout=60):
            raise self.unusable("is busy", f"all {self.size} connections of this process stayed in use for 60 s")
        conn = None
        stale = False
        try:
            with self._lock:
                if not fresh and self._idle:
                    conn, since = self._idle.pop()
                    stale = time.monotonic() - since > IDLE_CHECK_SECONDS
            if conn is None:
                conn = self.open()
            yield conn, stale
        finally:
            if conn is not None:
                if conn.closed or conn.broken or conn.info.transaction_status != 0:  # 0: idle, outside a transaction
                    _close(conn)
                else:
                    with self._lock:
                        self._idle.append((conn, time.monotonic()))
            self._free.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _since in idle:
            _close(conn)


class _Listener:
    """One ``LISTEN`` connection per process and store, in a daemon thread: counts the ``NOTIFY``s it hears, so a
    waiter sleeps until something is given back instead of asking the database again and again."""

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self.heard = 0
        self.last_heard = 0.0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zimage-store-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        psycopg = _driver()
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_SECONDS,
                                     application_name="comfyui-zimage listen") as conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    self._ready.set()
                    while not self._stop.is_set():
                        for _note in conn.notifies(timeout=1.0, stop_after=1):
                            with self._cond:
                                self.heard += 1
                                self.last_heard = time.monotonic()
                                self._cond.notify_all()
            except psycopg.Error as err:  # the server restarted: listen again; waiters look again on their own
                logger.debug("task store listener: %s", driver_reason(err, self.url))
                self._stop.wait(1.0)

    def wait(self, seconds: float, cancelled: threading.Event | None) -> None:
        self._ready.wait(min(seconds, 2.0))
        end = time.monotonic() + seconds
        with self._cond:
            # What was heard just before the caller started waiting may be what it waits for.
            if time.monotonic() - self.last_heard < 0.2:
                return
            seen = self.heard
            while self.heard == seen:
                left = end - time.monotonic()
                if left <= 0 or (cancelled is not None and cancelled.is_set()):
                    return
                self._cond.wait(min(left, 0.1) if cancelled is not None else left)

    def close(self) -> None:
        self._stop.set()


class PostgresStore(Store):
    """The store in a PostgreSQL database (see the module's notes). Local copies of task pictures still go to the
    data folder ``directory``; everything a run decides on, and the receipts' pictures, live in the database."""

    SQL_TASKS = _TASK_SELECT
    SQL_DURATIONS = _DURATIONS
    ROWID = "seq"

    def __init__(self, url: str, directory: str | os.PathLike[str] | None = None) -> None:
        super().__init__(directory)
        self.url = url
        self.address = store_address(url)
        self._pool: _Pool | None = None
        self._listener: _Listener | None = None
        self._guard = threading.Lock()
        self._channel = CHANNEL  # made per schema once connected
        _OPEN.add(self)

    def __repr__(self) -> str:
        return f"PostgresStore({self.address!r})"

    @property
    def where(self) -> str:
        return self.address

    def exists(self) -> bool:
        return True

    def _unusable(self, what: str, reason: object) -> StoreError:
        return StoreError(
            f"The shared task store at {self.address} {what} ({reason}), so nothing was sent: a paid request is "
            "made only once its record can be kept. Check that the PostgreSQL server is running and that "
            "ZIMAGE_STORE_URL (or [store] url in zimage.ini) names it.")

    def _newer(self, version: int) -> StoreError:
        return StoreError(f"The shared task store at {self.address} was written by a newer version of comfyui-zimage "
                          f"(schema {version}, this one knows {SCHEMA_VERSION}), so nothing was sent; update the "
                          "pack on this machine.")

    # -- connections -----------------------------------------------------------------------------------------------

    def _pool_now(self) -> _Pool:
        with self._guard:
            if self._pool is None or self._pool.pid != os.getpid():  # a forked child opens its own
                self._pool = _Pool(self.url, self._unusable)
                self._listener = None
                self._ready = False
            return self._pool

    @contextmanager
    def _connection(self, first: str | None = None, args: Sequence[Any] = ()) -> Iterator[tuple[Any, Any]]:
        """A working connection and the cursor of its ``first`` statement (SQL as psycopg takes it): a pooled
        connection that fails it (a restarted server cuts them all) is replaced by a new one, once. Nothing of a
        first statement that failed took effect, so it is sent again on the new connection."""
        psycopg = _driver()
        pool = self._pool_now()
        for attempt in (0, 1):
            with pool.connection(fresh=attempt > 0) as (conn, stale):
                try:
                    if stale and first is None:
                        conn.execute("SELECT 1")
                    if not self._ready:
                        self._set_up_pg(conn)
                    cursor = conn.execute(first, tuple(args)) if first is not None else None
                except psycopg.OperationalError as err:
                    if attempt == 0:
                        continue
                    raise self._unusable("cannot be reached", driver_reason(err, self.url)) from err
                except psycopg.Error as err:
                    raise self._unusable("cannot be used", driver_reason(err, self.url)) from err
                yield conn, cursor
                return

    def _set_up_pg(self, conn: Any) -> None:
        """Create or migrate the schema (once per store object; the advisory lock serialises the machines). A store
        already at this version is only read, so a worker's role needs no right to create tables."""
        psycopg = _driver()
        # Stores in other schemas of the same database (other farms, tests) have channels of their own.
        schema = conn.execute("SELECT current_schema()").fetchone()[0] or "public"
        self._channel = f"{CHANNEL}_{schema}"[:63]
        try:
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise self._newer(int(row[0]))
        if row is not None and int(row[0]) == SCHEMA_VERSION:
            self._ready = True
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_LOCK_CLASS,))
            conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            if version < SCHEMA_VERSION:
                for statement in filter(str.strip, (PG_TABLES + PG_INDEXES).split(";")):
                    conn.execute(statement)
                conn.execute(_Connection.translate(SQL_META), ("schema_version", str(SCHEMA_VERSION)))
        self._ready = True

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[Any]:
        psycopg = _driver()
        try:
            # One round trip: the transaction, its lock and (for a claim's bookkeeping) no wait for the disk.
            with self._connection(_BEGIN if durable else _BEGIN_NOT_DURABLE) as (raw, _began):
                try:
                    yield _Connection(raw)
                except BaseException:
                    if not raw.broken:
                        raw.execute("ROLLBACK")
                    raise
                raw.execute("COMMIT")
        except psycopg.Error as err:
            raise self._unusable("cannot be written", driver_reason(err, self.url)) from err

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        psycopg = _driver()
        try:
            with self._connection(_Connection.translate(sql), args) as (_raw, cursor):
                return list(cursor.fetchall())
        except psycopg.Error as err:
            reason = driver_reason(err, self.url)
            raise StoreError(f"The shared task store at {self.address} cannot be read ({reason}).") from err

    def _changed(self, conn: Any, what: str) -> None:
        conn.execute("SELECT pg_notify(?, ?)", (self._channel, what))

    def wait(self, seconds: float, cancelled: threading.Event | None = None) -> None:
        """Wait up to ``seconds`` for another run to give back a claim or a slot (``NOTIFY``), or ``cancelled``."""
        if not self._ready or self._pool is None:
            with self._connection():  # learns the schema, and so the channel
                pass
        with self._guard:
            if self._listener is None:
                self._listener = _Listener(self.url, self._channel)
            listener = self._listener
        listener.wait(seconds, cancelled)

    def close(self) -> None:
        """Close this process's connections to the store (a later use opens new ones)."""
        with self._guard:
            pool, self._pool = self._pool, None
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if pool is not None and pool.pid == os.getpid():
            pool.close()

    @staticmethod
    def close_all() -> None:
        """Close the connections of every PostgreSQL store this process opened."""
        for store in list(_OPEN):
            store.close()

    def check_writable(self) -> None:
        with self._write(durable=False) as conn:
            conn.execute(SQL_META, ("written_at", dumps(round(time.time(), 3))))

    def query_plan(self, sql: str, args: Sequence[Any] = ()) -> list[str]:
        """PostgreSQL's ``EXPLAIN`` lines for ``sql``."""
        return [str(row[0]) for row in self._read("EXPLAIN " + sql, args)]

    # -- receipts keep their pictures in the database ---------------------------------------------------------------

    def _keep_pictures_of(self, key: str, result: GenerationResult) -> list[str]:
        """A receipt's pictures go into the database, so that every machine of the farm serves them; a copy also
        goes to this machine's data folder (the Z-Image tab shows it from there), where it may fail."""
        with self._write() as conn:
            conn.execute("DELETE FROM receipt_pictures WHERE fingerprint = ?", (key,))
            conn.executemany("INSERT INTO receipt_pictures (fingerprint, idx, data) VALUES (?, ?, ?)",
                             [(key, index, data) for index, data in enumerate(result.images)])
        try:
            return super()._keep_pictures_of(key, result)
        except StoreError as err:  # the database copy is the one that counts
            logger.debug("no local copy of receipt %s: %s", key, err)
            return []

    def _receipt_images(self, key: str, record: dict[str, Any]) -> list[bytes]:
        from ..images import check_picture

        rows = self._read("SELECT data FROM receipt_pictures WHERE fingerprint = ? ORDER BY idx", (key,))
        if not rows:  # copied from a store that kept files only: read them where they are
            return super()._receipt_images(key, record)
        images = [bytes(row[0]) for row in rows]
        for index, data in enumerate(images):
            check_picture(data, source=f"the receipt {key} #{index}")
        return images

    def drop_result(self, key: str) -> None:
        super().drop_result(key)
        with self._write(durable=False) as conn:
            conn.execute("DELETE FROM receipt_pictures WHERE fingerprint = ?", (key,))

    def receipt_picture(self, key: str, index: int) -> bytes | None:
        rows = self._read("SELECT data FROM receipt_pictures WHERE fingerprint = ? AND idx = ?", (key, int(index)))
        return bytes(rows[0][0]) if rows else None


def driver_reason(err: BaseException, url: str) -> str:
    """The driver's words, one line, with the URL's password masked wherever they repeat it (libpq quotes a URL it
    cannot read, password and all)."""
    text = " ".join(str(err).split()) or type(err).__name__
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text[:300]


def _secrets(url: str) -> list[str]:
    """The password of ``url`` as written and as decoded, from its user part or a ``password=`` parameter."""
    from urllib.parse import parse_qs, unquote, urlsplit

    found: list[str] = []
    try:
        parts = urlsplit(url)
        raw = parts.netloc.rpartition("@")[0].partition(":")[2] if "@" in parts.netloc else ""
        found += [raw, unquote(raw)]
        for value in parse_qs(parts.query).get("password", []):
            found += [value, unquote(value)]
    except ValueError:
        pass
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 (already broken: nothing to give back)
        pass

