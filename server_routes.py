"""The pack's HTTP routes on ComfyUI's server, under ``/zimage/``: what a run costs, what today cost, the paid tasks
still to collect, and collecting one into ComfyUI's output folder without a new submit.

Each route is a plain function that takes values and returns a JSON-able dict (:func:`price_answer`,
:func:`spend_answer`, :func:`tasks_answer`, :func:`collect_answer`); :func:`register` adds thin aiohttp handlers for
them to ``PromptServer.instance.routes``. The routes answer only requests from this machine (127.0.0.1 or ::1):
ComfyUI 0.3.64 has no authentication of its own, and these routes spend and show money. No answer carries a key.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from .zimage_api.catalog import picture_extension
from .zimage_api.errors import ValidationError, ZImageError
from .zimage_api.logs import logger as log
from .zimage_api.pricing import price_of
from .zimage_api.validation import check_task_id

__all__ = ["price_answer", "spend_answer", "tasks_answer", "collect_answer", "is_local", "register", "Routes",
           "OUTPUT_SUBFOLDER", "PROVIDERS"]

PROVIDERS = ("wavespeed", "qingbo")
OUTPUT_SUBFOLDER = "zimage"  # collected pictures go to <output>/zimage/<task id>_<i>.<ext>
RECENT_DAYS = 7
RECENT_LIMIT = 12
BALANCE_SECONDS = 60.0  # how long a WaveSpeed balance is shown before it is asked again
NOT_LOCAL = ("The Z-Image routes answer only requests from this machine; open ComfyUI on 127.0.0.1 to see prices, "
             "spend and tasks.")


class RouteError(Exception):
    """A request the route refuses: ``status`` is the HTTP status, the message one sentence for the artist."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- who may ask --------------------------------------------------------------------------------------------------


def _loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def is_local(remote: str | None, headers: Mapping[str, str]) -> bool:
    """Whether a request comes from this machine: its peer is a loopback address and no proxy forwarded it from
    elsewhere (a ``Forwarded``/``X-Forwarded-For``/``X-Real-IP`` header naming another address)."""
    if not _loopback(remote):
        return False
    forwarded = [headers.get(name, "") for name in ("X-Forwarded-For", "X-Real-IP")]
    forwarded += [part.split("=", 1)[1] for part in headers.get("Forwarded", "").replace(",", ";").split(";")
                  if part.strip().lower().startswith("for=")]
    for value in forwarded:
        for address in value.split(","):
            address = address.strip().strip('"')
            if address.startswith("["):
                address = address[1:].split("]", 1)[0]
            elif address.count(":") == 1:
                address = address.split(":", 1)[0]
            if address and not _loopback(address):
                return False
    return True


# -- the answers --------------------------------------------------------------------------------------------------


def price_answer(body: object) -> dict[str, Any]:
    """``POST /zimage/price`` ``{"node", "widgets", "loras"}``: the price of the node's next run (see
    :meth:`zimage_api.pricing.Price.as_json`)."""
    if not isinstance(body, Mapping):
        raise RouteError("Send a JSON object with node, widgets and loras.")
    node, widgets, loras = body.get("node"), body.get("widgets") or {}, body.get("loras") or 0
    if not isinstance(node, str) or not isinstance(widgets, Mapping):
        raise RouteError("Send the node's class name as node and its widget values as widgets.")
    try:
        return price_of(node, widgets, loras).as_json()
    except ValidationError as err:
        raise RouteError(err.message) from err


def local_midnight(now: float) -> float:
    """The start of the local day of ``now`` (unix seconds)."""
    moment = datetime.datetime.fromtimestamp(now)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def spend_answer(store: Any, *, now: float, day_start: float, budget: float | None,
                 balance: float | None) -> dict[str, Any]:
    """``GET /zimage/spend``: today's spend by provider (``Store.spend`` since ``day_start``), the daily budget and
    what is left of it (None without a budget), and the WaveSpeed balance (None when unknown)."""
    spent = store.spend(day_start)
    by_provider = {name: round(float(spent.get(name, 0.0)), 6) for name in PROVIDERS}
    today = round(sum(float(v) for v in spent.values()), 6)
    left = None if budget is None else round(max(budget - today, 0.0), 6)
    return {"today_usd": today, "by_provider": by_provider, "budget_usd": budget, "left_usd": left,
            "balance_usd": balance, "day_start": day_start, "now": now}


def view_url(path: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None) -> str | None:
    """ComfyUI's ``/view`` URL of a file inside the output folder, or None for a file elsewhere."""
    if not output_dir:
        return None
    try:
        relative = Path(path).resolve().relative_to(Path(output_dir).resolve())
    except (ValueError, OSError):
        return None
    subfolder = relative.parent.as_posix()
    return "/view?" + urlencode({"filename": relative.name, "subfolder": "" if subfolder == "." else subfolder,
                                 "type": "output"})


def _collected_files(task_id: str, output_dir: str | os.PathLike[str] | None) -> list[Path]:
    if not output_dir:
        return []
    folder = Path(output_dir) / OUTPUT_SUBFOLDER
    try:
        return sorted(folder.glob(f"{_safe(task_id)}_*.*"))
    except OSError:
        return []


def _pictures(paths: Sequence[str], task_id: str | None, output_dir: str | os.PathLike[str] | None,
              fingerprint: str | None = None) -> list[dict[str, Any]]:
    """Each picture as ``{"name", "url"}``: a ``/view`` URL where the file is in the output folder (the route's
    own copy of a collected task first), else the pack's ``/zimage/picture`` URL of the kept copy."""
    files = [Path(p) for p in paths]
    if task_id:
        files = _collected_files(task_id, output_dir) or files
    pictures = []
    for index, file in enumerate(files):
        url = view_url(file, output_dir)
        if url is None and fingerprint:
            url = f"/zimage/picture/{fingerprint}/{index}"
        pictures.append({"name": file.name, "url": url})
    return pictures


def picture_file(store: Any, fingerprint: str, index: int) -> Path | bytes:
    """``GET /zimage/picture/{fingerprint}/{index}``: a paid picture's kept copy in the data folder (a receipt's, or
    its task's), else its bytes from a shared store (another machine of the farm paid for it). Only files inside the
    store's own folder are served."""
    for row in store.spend_rows(0.0, limit=RECENT_LIMIT * 4):
        if row.get("fingerprint") == fingerprint:
            paths = [Path(p) for p in row.get("paths") or ()]
            break
    else:
        raise RouteError("No paid picture is kept under that name.", status=404)
    if 0 <= index < len(paths):
        path = paths[index].resolve()
        if Path(store.directory).resolve() in path.parents and path.is_file():
            return path
    kept = store.receipt_picture(fingerprint, index) if index >= 0 else None
    if kept is None or (len(paths) > 0 and index >= len(paths)):
        raise RouteError("No paid picture is kept under that name.", status=404)
    return kept


def tasks_answer(store: Any, *, now: float, output_dir: str | os.PathLike[str] | None = None,
                 since: float | None = None, limit: int = RECENT_LIMIT) -> dict[str, Any]:
    """``GET /zimage/tasks``: the paid tasks not collected yet, oldest first, and the last paid pictures, newest
    first, with their cost."""
    unfinished = []
    for task in store.unfinished():
        submitted = task.get("submitted_at") or task.get("time")
        unfinished.append({
            "task_id": task["task_id"], "provider": task.get("provider"), "model": task.get("model"),
            "status": task.get("status"),
            "age_s": None if submitted is None else round(max(now - float(submitted), 0.0), 1),
            "prompt_head": task.get("prompt_head") or ""})
    rows = store.spend_rows(now - RECENT_DAYS * 86400 if since is None else since, limit=limit)
    recent = []
    for row in rows:
        task_id = row.get("task_id")
        recent.append({
            "task_id": task_id, "fingerprint": row.get("fingerprint"), "provider": row.get("provider"),
            "model": row.get("model"), "usd": row.get("usd"), "state": row.get("state"), "at": row.get("at"),
            "paths": _pictures(row.get("paths") or (), task_id, output_dir, row.get("fingerprint"))})
    return {"unfinished": unfinished, "recent": recent}


def _safe(task_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task_id)[:120]


def write_pictures(task_id: str, images: Sequence[bytes], output_dir: str | os.PathLike[str]) -> list[Path]:
    """Write a task's pictures to ``<output>/zimage/<task id>_<i>.<ext>`` and return their paths."""
    folder = Path(output_dir) / OUTPUT_SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, data in enumerate(images):
        path = folder / f"{_safe(task_id)}_{index}.{picture_extension(data)}"
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)
        paths.append(path)
    return paths


def collect_answer(store: Any, body: object, output_dir: str | os.PathLike[str], *, timeout: float = 120.0,
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                   session: Any = None) -> dict[str, Any]:
    """``POST /zimage/collect`` ``{"task_id", "provider"}``: wait for a paid task (never submitting anything) and
    write its pictures to ComfyUI's output folder; ``charged`` is always False: collecting is not paid."""
    from .zimage_api.clients import Clients
    from .zimage_api.engine import Engine, collect_error

    if not isinstance(body, Mapping):
        raise RouteError("Send a JSON object with task_id and provider.")
    provider = body.get("provider") or "qingbo"
    if provider not in PROVIDERS:
        raise RouteError(f"The provider must be wavespeed or qingbo, not {provider!r}.")
    try:
        task_id = check_task_id(body.get("task_id"), provider="Qingbo" if provider == "qingbo" else "WaveSpeed")
    except ValidationError as err:
        raise RouteError(err.message) from err
    clients = Clients(store=store, sleep=sleep, session=session)
    try:
        engine = Engine(clients, clock=clock, sleep=sleep)
        outcomes = engine.collect([task_id], provider="qingbo" if provider == "qingbo" else "wavespeed",
                                  timeout=timeout)
    finally:
        clients.close()
    error = collect_error(outcomes, [task_id], timeout)
    if error is not None:
        raise RouteError(str(error), status=502)
    result = outcomes[0].value
    images = result.images if result is not None else []
    written = write_pictures(task_id, images, output_dir)
    files = [{"name": p.name, "subfolder": OUTPUT_SUBFOLDER, "type": "output", "url": view_url(p, output_dir)}
             for p in written]
    usd = result.cost_usd if result is not None else None
    return {"task_id": task_id, "provider": provider, "files": files, "charged": False, "usd": usd}


# -- the glue -----------------------------------------------------------------------------------------------------


def _budget() -> tuple[float | None, Callable[[float], float]]:
    """The daily budget and the start of a day, from the library (local midnight and no budget where it has
    none)."""
    try:
        from .zimage_api import budget as module
    except ImportError:
        return None, local_midnight
    return module.daily_budget(), getattr(module, "day_start", local_midnight)


class Routes:
    """The routes' state in one ComfyUI: where the store and the output folder are, and the last balance read."""

    def __init__(self, store: Callable[[], Any], output_dir: Callable[[], str],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.output_dir = output_dir
        self.clock = clock
        self._balance: tuple[float, float | None] | None = None
        self._lock = threading.Lock()

    def balance(self) -> float | None:
        """The WaveSpeed balance in USD, asked at most once a minute; None without a key or when it fails."""
        now = self.clock()
        with self._lock:
            if self._balance is not None and now - self._balance[0] < BALANCE_SECONDS:
                return self._balance[1]
        value: float | None
        try:
            from .zimage_api.clients import Clients
            from .zimage_api.http.deadline import Deadline

            clients = Clients(store=self.store())
            try:
                value = clients.v3().balance(deadline=Deadline.after(8.0))
            finally:
                clients.close()
        except Exception as err:  # shown only: no key, no network or an odd answer all mean "unknown"
            log.debug("balance not known: %s", err)
            value = None
        with self._lock:
            self._balance = (now, value)
        return value

    def spend(self) -> dict[str, Any]:
        now = self.clock()
        budget, day_start = _budget()
        return spend_answer(self.store(), now=now, day_start=day_start(now), budget=budget, balance=self.balance())

    def tasks(self) -> dict[str, Any]:
        return tasks_answer(self.store(), now=self.clock(), output_dir=self.output_dir())

    def collect(self, body: object) -> dict[str, Any]:
        return collect_answer(self.store(), body, self.output_dir())


def _same_origin(headers: Mapping[str, str]) -> bool:
    """A browser request from another site (its Origin is not this host) is refused."""
    origin = headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc.lower() == headers.get("Host", "").lower()


def register(server: Any, routes: Routes | None = None) -> Routes:
    """Add the ``/zimage/`` routes to ComfyUI's ``PromptServer`` (its ``routes`` table, before the app starts)."""
    from aiohttp import web

    if routes is None:
        from . import nodes

        def store() -> Any:
            return nodes._store(nodes._Node.context)

        def output_dir() -> str:
            import folder_paths  # ComfyUI's own module

            return str(folder_paths.get_output_directory())

        routes = Routes(store, output_dir)
    table = server.routes

    def guarded(work: Callable[[Any], dict[str, Any]], *, post: bool) -> Callable[[Any], Any]:
        async def handler(request: Any) -> Any:
            if not is_local(request.remote, request.headers) or not _same_origin(request.headers):
                return web.json_response({"error": NOT_LOCAL}, status=403)
            body: object = None
            if post:
                try:
                    body = await request.json()
                except ValueError:
                    return web.json_response({"error": "Send the request body as JSON."}, status=400)
            try:
                answer = await asyncio.to_thread(work, body)
            except RouteError as err:
                return web.json_response({"error": err.message}, status=err.status)
            except ZImageError as err:
                return web.json_response({"error": err.message}, status=502)
            except Exception as err:  # an answer, never a stack trace, in the sidebar
                log.warning("%s failed: %s", request.path, err)
                return web.json_response({"error": f"The Z-Image route failed: {type(err).__name__}."}, status=500)
            return web.json_response(answer)
        return handler

    table.post("/zimage/price")(guarded(price_answer, post=True))
    table.get("/zimage/spend")(guarded(lambda _body: routes.spend(), post=False))
    table.get("/zimage/tasks")(guarded(lambda _body: routes.tasks(), post=False))
    table.post("/zimage/collect")(guarded(routes.collect, post=True))

    async def picture(request: Any) -> Any:
        if not is_local(request.remote, request.headers):
            return web.json_response({"error": NOT_LOCAL}, status=403)
        try:
            path = picture_file(routes.store(), str(request.match_info["fingerprint"]),
                                int(request.match_info["index"]))
        except (RouteError, ValueError) as err:
            return web.json_response({"error": getattr(err, "message", str(err))}, status=404)
        if isinstance(path, bytes):
            return web.Response(body=path, content_type=f"image/{picture_extension(path).replace('jpg', 'jpeg')}")
        return web.FileResponse(path)

    table.get("/zimage/picture/{fingerprint}/{index}")(picture)
    return routes
