"""The pack's /zimage/ routes: the price of a node's run, today's spend, the paid tasks, collecting one without paying.

The answers are plain functions (server_routes.price_answer, spend_answer, tasks_answer, collect_answer); the aiohttp
glue is checked through aiohttp's own test server, as ComfyUI serves it.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from tests.comfy_stubs import PACK_MODULE, load_pack
from zimage_api.catalog import QINGBO_USD_PER_PICTURE
from zimage_api.orders import ControlNet, Edit, Inpaint, Lora, MaskedReference, QingboTasks, Reference, TextToImage
from zimage_api.store import Store

PACK = load_pack()
ROUTES: Any = __import__(f"{PACK_MODULE}.server_routes", fromlist=["register"])
PROMPT = "A lighthouse on a cliff at dusk, long exposure, calm sea"
SECRET = "sk-route-check-7f3a9c"


class SpendStore(Store):
    """A store whose spend figures (Store.spend / Store.spend_rows) are set by the test."""

    def __init__(self, directory: Path, spent: dict[str, float], rows: list[dict[str, Any]]) -> None:
        super().__init__(directory)
        self.spent, self.rows, self.asked = spent, rows, []

    def spend(self, since: float, until: float | None = None) -> dict[str, float]:
        self.asked.append(since)
        return dict(self.spent)

    def spend_rows(self, since: float, limit: int = 50) -> list[dict[str, Any]]:
        return self.rows[:limit]


def picture(size: tuple[int, int] = (96, 64)) -> Image.Image:
    return Image.new("RGB", size, (40, 90, 160))


def mask(size: tuple[int, int] = (96, 64)) -> Image.Image:
    painted = Image.new("L", size, 0)
    painted.paste(255, (10, 10, 40, 40))
    return painted


# -- price -----------------------------------------------------------------------------------------------------------

LORAS = [Lora("owner/style", 0.8), Lora("owner/light", 1.0), Lora("owner/grain", 0.5)]

# (node, widgets, loras connected, the order that node builds from them)
CASES: list[tuple[str, dict[str, Any], int, Any]] = []
for _model in ("Z-Image-Base", "Z-Image-Turbo"):
    for _api in ("v1/images", "v3"):
        for _count in (1, 3, 8):
            CASES.append(("ZImageGenerate", {"model": _model, "api": _api, "count": _count, "seed": 7}, 0,
                          lambda m=_model, a=_api, c=_count: TextToImage(PROMPT, model=m, api=a, count=c)))
            CASES.append(("ZImageEdit", {"model": _model, "api": _api, "count": _count, "strength": 0.4}, 0,
                          lambda m=_model, a=_api, c=_count: Edit(
                              PROMPT, model=m, api=a, count=c, references=(Reference.from_image(picture()),))))
        for _n in (1, 2, 3):
            CASES.append(("ZImageGenerate", {"model": _model, "api": "v3", "count": 2}, _n,
                          lambda m=_model, n=_n: TextToImage(PROMPT, model=m, api="v3", count=2, loras=LORAS[:n])))
            CASES.append(("ZImageEdit", {"model": _model, "api": "v3", "count": 4}, _n,
                          lambda m=_model, n=_n: Edit(PROMPT, model=m, api="v3", count=4, loras=LORAS[:n],
                                                      references=(Reference.from_image(picture()),))))
for _count in (1, 2, 5, 8):
    CASES.append(("ZImageInpaint", {"count": _count, "seed": 3}, 0, lambda c=_count: Inpaint(
        PROMPT, count=c, pictures=(MaskedReference.from_images(picture(), mask()),))))
    for _mode in ("depth", "canny", "pose", "none"):
        CASES.append(("ZImageControlNet", {"mode": _mode, "count": _count, "strength": 0.7}, 0,
                      lambda c=_count, md=_mode: ControlNet(PROMPT, count=c, mode=md,
                                                           references=(Reference.from_image(picture()),))))
    for _extend in (False, True):
        CASES.append(("QingboTaskSubmit", {"count": _count, "prompt_extend": _extend, "resolution": "2K"}, 0,
                      lambda c=_count, e=_extend: QingboTasks(PROMPT, count=c, prompt_extend=e)))


@pytest.mark.parametrize(("node", "widgets", "loras", "build"), CASES,
                         ids=[f"{n}-{json.dumps(w, sort_keys=True)}-loras{lo}" for n, w, lo, _ in CASES])
def test_the_price_route_says_what_the_order_costs(node: str, widgets: dict[str, Any], loras: int, build: Any
                                                    ) -> None:
    order = build()
    each = QINGBO_USD_PER_PICTURE if isinstance(order, QingboTasks) else order.price
    answer = ROUTES.price_answer({"node": node, "widgets": widgets, "loras": loras})
    assert answer["per_picture"] == each
    assert answer["units"] == order.units
    assert answer["usd"] == pytest.approx(each * order.units, abs=1e-9)
    if not isinstance(order, QingboTasks):
        assert answer["model"] == order.endpoint_name
    assert answer["text"].lstrip("≈").rstrip("+").startswith("$")


def test_the_price_answer_has_its_fields_and_a_short_text() -> None:
    answer = ROUTES.price_answer({"node": "ZImageGenerate", "widgets": {"model": "Z-Image-Base", "api": "v3",
                                                                       "count": 2}, "loras": 1})
    assert answer == {"node": "ZImageGenerate", "model": "wavespeed-ai/z-image/base-lora", "usd": 0.024,
                      "text": "$0.024", "per_picture": 0.012, "per_picture_text": "$0.012", "units": 2,
                      "estimated": False, "per_reference": False, "extra": False}
    unpublished = ROUTES.price_answer({"node": "ZImageGenerate", "widgets": {"model": "Z-Image-Turbo", "api": "v3"}})
    assert unpublished["text"] == "≈$0.01" and unpublished["estimated"] is True
    qingbo = ROUTES.price_answer({"node": "QingboTaskSubmit", "widgets": {"count": 2, "prompt_extend": True}})
    assert qingbo["text"] == "$0.0213+" and qingbo["extra"] is True


@pytest.mark.parametrize(("body", "said"), [
    ({"node": "ZImageGenerate", "widgets": {"api": "v1/images"}, "loras": 1}, "LoRAs need the v3 api"),
    ({"node": "ZImageGenerate", "widgets": {"api": "v3"}, "loras": 4}, "at most 3"),
    ({"node": "ZImageGenerate", "widgets": {"count": 9}}, "The count 9 is outside 1-8."),
    ({"node": "QingboTaskPoll", "widgets": {}}, "has no price"),
    (["ZImageGenerate"], "Send a JSON object"),
])
def test_a_price_the_node_would_refuse_is_an_error_sentence(body: Any, said: str) -> None:
    with pytest.raises(ROUTES.RouteError) as caught:
        ROUTES.price_answer(body)
    assert said in caught.value.message and caught.value.status == 400


# -- spend and tasks -------------------------------------------------------------------------------------------------


def test_spend_answers_today_by_provider_budget_left_and_balance(tmp_path: Path) -> None:
    store = SpendStore(tmp_path / "store", {"wavespeed": 0.036, "qingbo": 0.021252}, [])
    answer = ROUTES.spend_answer(store, now=1_780_000_000.0, day_start=1_779_960_000.0, budget=0.5, balance=9.96)
    assert store.asked == [1_779_960_000.0]
    assert answer == {"today_usd": 0.057252, "by_provider": {"wavespeed": 0.036, "qingbo": 0.021252},
                      "budget_usd": 0.5, "left_usd": 0.442748, "balance_usd": 9.96, "day_start": 1_779_960_000.0,
                      "now": 1_780_000_000.0}
    none = ROUTES.spend_answer(SpendStore(tmp_path / "s2", {}, []), now=5.0, day_start=0.0, budget=None,
                               balance=None)
    assert none["today_usd"] == 0 and none["by_provider"] == {"wavespeed": 0, "qingbo": 0}
    assert none["budget_usd"] is None and none["left_usd"] is None and none["balance_usd"] is None
    over = ROUTES.spend_answer(store, now=5.0, day_start=0.0, budget=0.05, balance=None)
    assert over["left_usd"] == 0


def test_tasks_lists_unfinished_with_age_and_prompt_head_and_recent_with_view_urls(tmp_path: Path) -> None:
    output = tmp_path / "output"
    kept = output / "zimage" / "task-abc_0.png"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"\x89PNG\r\n\x1a\n")
    rows = [{"fingerprint": "f1", "provider": "qingbo", "model": "z-image-turbo", "usd": 0.010626, "state": "spent",
             "at": 100.0, "task_id": "task-abc", "paths": [str(tmp_path / "store" / "results" / "task-abc_0.png")]},
            {"fingerprint": "f2", "provider": "wavespeed", "model": "wavespeed-ai/z-image/base", "usd": 0.01,
             "state": "reserved", "at": 90.0, "task_id": None, "paths": [str(tmp_path / "elsewhere" / "p 1.png")]}]
    store = SpendStore(tmp_path / "store", {}, rows)
    store.record_submitted("task-open", provider="qingbo", model="z-image-turbo", prompt_sha256="0" * 64,
                           params={"aspect_ratio": "1:1"}, status="queued", prompt_head="A lighthouse on a cliff")
    submitted = store.task("task-open")["submitted_at"]
    answer = ROUTES.tasks_answer(store, now=submitted + 125.0, output_dir=output)
    assert answer["unfinished"] == [{"task_id": "task-open", "provider": "qingbo", "model": "z-image-turbo",
                                     "status": "queued", "age_s": 125.0, "prompt_head": "A lighthouse on a cliff"}]
    first, second = answer["recent"]
    assert first["paths"] == [{"name": "task-abc_0.png",
                               "url": "/view?filename=task-abc_0.png&subfolder=zimage&type=output"}]
    assert (first["task_id"], first["usd"], first["provider"]) == ("task-abc", 0.010626, "qingbo")
    # a kept copy outside the output folder is served by the pack's own picture route
    assert second["paths"] == [{"name": "p 1.png", "url": "/zimage/picture/f2/0"}] and second["fingerprint"] == "f2"


# -- collect ---------------------------------------------------------------------------------------------------------


def test_collect_writes_the_paid_qingbo_task_into_output_without_a_new_submit(emu: Any, clock: Any,
                                                                              tmp_path: Path) -> None:
    from zimage_api.clients import Clients
    from zimage_api.engine import Engine

    store = Store()
    engine = Engine(Clients(store=store, sleep=clock.sleep), clock=clock, sleep=clock.sleep)
    [accepted] = engine.submit(QingboTasks(PROMPT, seed=11))
    task_id = accepted.value.task_id
    assert [t["task_id"] for t in store.unfinished()] == [task_id]
    submits = len(emu.requests_to("POST /v1/tasks"))

    answer = ROUTES.collect_answer(store, {"task_id": task_id, "provider": "qingbo"}, tmp_path / "output",
                                   clock=clock, sleep=clock.sleep)

    assert len(emu.requests_to("POST /v1/tasks")) == submits == 1
    assert answer["charged"] is False and answer["task_id"] == task_id
    [written] = answer["files"]
    assert written["subfolder"] == "zimage" and written["type"] == "output"
    assert written["url"] == f"/view?filename={written['name']}&subfolder=zimage&type=output"
    with Image.open(tmp_path / "output" / "zimage" / written["name"]) as got:
        assert got.size[0] > 0 and got.getpixel((0, 0)) is not None
    assert store.unfinished() == []


def test_collect_of_a_wavespeed_prediction_sends_no_prediction(emu: Any, clock: Any, tmp_path: Path) -> None:
    from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

    store = Store()
    prediction = WaveSpeedClient(store=store, sleep=clock.sleep, now=clock).submit(PROMPT, width=512, height=512,
                                                                                   seed=5)
    paid = len(emu.requests_to("POST /api/v3/wavespeed-ai/*"))
    answer = ROUTES.collect_answer(store, {"task_id": prediction.id, "provider": "wavespeed"}, tmp_path,
                                   clock=clock, sleep=clock.sleep)
    assert len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == paid == 1
    assert len(answer["files"]) == 1 and (tmp_path / "zimage" / answer["files"][0]["name"]).stat().st_size > 0


@pytest.mark.parametrize(("body", "said"), [
    ({"task_id": "../etc/passwd", "provider": "qingbo"}, "task id"),
    ({"task_id": "task-1", "provider": "openai"}, "wavespeed or qingbo"),
    ("task-1", "Send a JSON object"),
])
def test_collect_refuses_bad_ids_and_providers_before_any_request(body: Any, said: str, tmp_path: Path) -> None:
    with pytest.raises(ROUTES.RouteError) as caught:
        ROUTES.collect_answer(Store(), body, tmp_path)
    assert said in caught.value.message.lower() or said in caught.value.message


# -- who may ask -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("remote", "headers", "local"), [
    ("127.0.0.1", {}, True),
    ("::1", {}, True),
    ("127.0.0.5", {}, True),
    ("::ffff:127.0.0.1", {}, True),
    ("192.168.1.20", {}, False),
    ("10.0.0.7", {}, False),
    ("fe80::1%eth0", {}, False),
    (None, {}, False),
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, False),
    ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}, False),
    ("127.0.0.1", {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'}, False),
    ("127.0.0.1", {"X-Real-IP": "198.51.100.2"}, False),
    ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}, True),
])
def test_only_this_machine_may_ask(remote: str | None, headers: dict[str, str], local: bool) -> None:
    assert ROUTES.is_local(remote, headers) is local


# -- through aiohttp, as ComfyUI serves them -------------------------------------------------------------------------

aiohttp = pytest.importorskip("aiohttp")


def served(tmp_path: Path, store: Store, balance: float | None = 4.5) -> tuple[Any, Any]:
    from aiohttp import web

    server = SimpleNamespace(routes=web.RouteTableDef())
    routes = ROUTES.register(server, ROUTES.Routes(lambda: store, lambda: str(tmp_path / "output")))
    routes._balance = (routes.clock(), balance)  # the balance as read a moment ago
    app = web.Application()
    app.add_routes(server.routes)
    return app, routes


def ask(app: Any, calls: list[tuple[str, str, Any]], headers: dict[str, str] | None = None
        ) -> list[tuple[int, str]]:
    from aiohttp.test_utils import TestClient, TestServer

    async def run() -> list[tuple[int, str]]:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            answers = []
            for method, path, body in calls:
                response = await client.request(method, path, json=body, headers=headers or {})
                answers.append((response.status, await response.text()))
            return answers

    return asyncio.run(run())


def test_the_routes_answer_json_on_loopback_and_no_answer_holds_a_key(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    for name in ("WAVESPEED_API_KEY", "QINGBO_API_KEY", "WAVE_API_KEY"):
        monkeypatch.setenv(name, SECRET)
    (tmp_path / "zimage.ini").write_text(f"[wavespeed]\napi_key = {SECRET}\n[qingbo]\napi_key = {SECRET}\n")
    store = SpendStore(tmp_path / "store", {"wavespeed": 0.02}, [])
    store.record_submitted("task-1", provider="qingbo", model="z-image-turbo", prompt_sha256="1" * 64, params={},
                           status="queued")
    app, _routes = served(tmp_path, store)
    answers = ask(app, [
        ("POST", "/zimage/price", {"node": "ZImageInpaint", "widgets": {"count": 2}, "loras": 0}),
        ("GET", "/zimage/spend", None),
        ("GET", "/zimage/tasks", None),
        ("POST", "/zimage/price", {"node": "ZImageGenerate", "widgets": {"api": "v1/images"}, "loras": 2}),
        ("POST", "/zimage/collect", {"task_id": "task 1", "provider": "qingbo"}),
    ])
    statuses = [status for status, _ in answers]
    assert statuses == [200, 200, 200, 400, 400]
    price, spend, tasks, refused, bad_id = (json.loads(text) for _, text in answers)
    assert price["text"] == "$0.04"
    assert set(spend) == {"today_usd", "by_provider", "budget_usd", "left_usd", "balance_usd", "day_start", "now"}
    assert spend["today_usd"] == 0.02 and spend["balance_usd"] == 4.5
    assert [t["task_id"] for t in tasks["unfinished"]] == ["task-1"] and tasks["recent"] == []
    assert refused == {"error": "LoRAs need the v3 api: /v1/images has no LoRA field. Set api to v3, or remove the "
                                "LoRAs."}
    assert set(bad_id) == {"error"}
    for _, text in answers:
        assert SECRET not in text


def test_a_failing_balance_is_unknown_and_its_error_holds_no_key(emu: Any, monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("WAVESPEED_API_KEY", SECRET)  # the emulator refuses this key
    store = SpendStore(tmp_path / "store", {}, [])
    routes = ROUTES.Routes(lambda: store, lambda: str(tmp_path))
    answer = routes.spend()
    assert answer["balance_usd"] is None
    assert SECRET not in json.dumps(answer)


def test_the_balance_is_read_from_wavespeed_once_a_minute(emu: Any, tmp_path: Path) -> None:
    store = SpendStore(tmp_path / "store", {}, [])
    now = [1000.0]
    routes = ROUTES.Routes(lambda: store, lambda: str(tmp_path), clock=lambda: now[0])
    first = routes.spend()["balance_usd"]
    assert isinstance(first, float)
    routes.spend()
    now[0] += 61
    routes.spend()
    assert len(emu.requests_to("GET /api/v3/balance")) == 2


def test_a_request_from_another_machine_or_site_is_refused(tmp_path: Path) -> None:
    from aiohttp.test_utils import make_mocked_request

    app, _routes = served(tmp_path, SpendStore(tmp_path / "store", {}, []))
    handlers = {(r.method, r.resource.canonical): r.handler for r in app.router.routes()}

    def status(method: str, path: str, remote: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        transport = SimpleNamespace(get_extra_info=lambda name, default=None: (remote, 5555)
                                    if name == "peername" else default)
        request = make_mocked_request(method, path, headers=headers or {}, transport=transport, app=app)
        response = asyncio.run(handlers[(method, path)](request))
        return response.status, json.loads(response.text)

    for method, path in (("GET", "/zimage/spend"), ("GET", "/zimage/tasks"), ("POST", "/zimage/price"),
                         ("POST", "/zimage/collect")):
        code, body = status(method, path, "192.168.1.20")
        assert code == 403 and body["error"].startswith("The Z-Image routes answer only requests from this machine")
    assert status("GET", "/zimage/spend", "127.0.0.1", {"X-Forwarded-For": "203.0.113.9"})[0] == 403
    assert status("GET", "/zimage/spend", "127.0.0.1", {"Origin": "http://evil.example",
                                                         "Host": "127.0.0.1:8188"})[0] == 403
    assert status("GET", "/zimage/spend", "127.0.0.1", {"Origin": "http://127.0.0.1:8188",
                                                         "Host": "127.0.0.1:8188"})[0] == 200


# -- the pack registers the routes only inside ComfyUI -----------------------------------------------------------------


def test_importing_the_pack_outside_comfyui_adds_no_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "server", raising=False)
    PACK._register_routes()  # nothing to register with: no error, no server module imported
    assert "server" not in sys.modules


def test_inside_comfyui_the_pack_adds_its_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp import web

    table = web.RouteTableDef()
    fake = ModuleType("server")
    fake.PromptServer = SimpleNamespace(instance=SimpleNamespace(routes=table))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server", fake)
    PACK._register_routes()
    assert sorted((r.method, r.path) for r in table) == [  # type: ignore[attr-defined]
        ("GET", "/zimage/picture/{fingerprint}/{index}"), ("GET", "/zimage/spend"), ("GET", "/zimage/tasks"),
        ("POST", "/zimage/collect"), ("POST", "/zimage/price")]
    no_instance = ModuleType("server")
    no_instance.PromptServer = SimpleNamespace(instance=None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server", no_instance)
    PACK._register_routes()  # a server module without a running server: nothing happens


def test_pictures_written_by_collect_round_trip(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    picture((8, 8)).save(buffer, format="PNG")
    [path] = ROUTES.write_pictures("task:1/x", [buffer.getvalue()], tmp_path)
    assert path == tmp_path / "zimage" / "task_1_x_0.png" and path.read_bytes() == buffer.getvalue()


def test_a_kept_picture_is_served_only_from_the_stores_own_folder(tmp_path: Path) -> None:
    from zimage_api.store import Price, Store

    store = Store(tmp_path / "data")
    store.claim("f1", "me", price=Price("wavespeed", "Z-Image-Base", 0.01))
    kept = store.receipts_dir / "f1_0.png"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"png")
    store.finish("f1", "me", result={"paths": [str(kept)]})
    assert ROUTES.picture_file(store, "f1", 0) == kept.resolve()
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"png")
    store.claim("f2", "me", price=Price("wavespeed", "Z-Image-Base", 0.01))
    store.finish("f2", "me", result={"paths": [str(outside)]})
    for fingerprint, index in (("f2", 0), ("f1", 1), ("nope", 0)):
        with pytest.raises(ROUTES.RouteError):
            ROUTES.picture_file(store, fingerprint, index)


def test_a_receipt_paid_on_another_machine_is_served_from_the_shared_store(tmp_path: Path, pg_url: str) -> None:
    from zimage_api.results import GenerationResult
    from zimage_api.store import Price
    from zimage_api.store.postgres import PostgresStore

    buffer = io.BytesIO()
    picture((8, 8)).save(buffer, format="PNG")
    paying = PostgresStore(pg_url, tmp_path / "machine-a")
    paying.claim("f1", "a", price=Price("wavespeed", "Z-Image-Base", 0.01))
    paying.keep_result("f1", GenerationResult(images=[buffer.getvalue()], provider="wavespeed", protocol="v3",
                                                    prompt_sha256="0" * 64, model="Z-Image-Base"), owner="a")
    other = PostgresStore(pg_url, tmp_path / "machine-b")
    assert ROUTES.picture_file(paying, "f1", 0) == (tmp_path / "machine-a" / "receipts" / "f1_0.png").resolve()
    assert ROUTES.picture_file(other, "f1", 0) == buffer.getvalue()  # not on this disk: the bytes from the store
    with pytest.raises(ROUTES.RouteError):
        ROUTES.picture_file(other, "f1", 1)
    paying.close()
    other.close()
