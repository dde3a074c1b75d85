"""WaveSpeed as the engine drives it, over its two protocols: the OpenAI-style ``/v1/images`` (the answer is the
picture: a submit returns a finished handle) and the native v3 predictions (submit, then collect by id)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any

from ..catalog import V3_MODEL_PATHS
from ..config import WAVESPEED
from ..errors import APIError, ResultExpiredError
from ..orders import ControlNet, Edit, Inpaint, QingboTasks, fingerprint
from ..results import GenerationResult
from .base import Call, Handle, ProviderName, Recovery, Unit

if TYPE_CHECKING:
    from ..account import Funds
    from ..clients import Clients
    from ..orders import Order, PictureOrder

__all__ = ["ImagesProvider", "V3Provider", "picture_units"]


def picture_units(order: PictureOrder, endpoint: str) -> list[Unit]:
    """The paid pictures of a WaveSpeed order: every reference (or none) times ``count``, picture *i* with
    ``seed + i``. Their fingerprints are the same as in every earlier release, so earlier receipts still match."""
    units: list[Unit] = []
    refs: Sequence[int | None] = range(len(order.references)) if isinstance(order, Edit) else [None]
    for ref in refs:
        for i in range(order.count):
            seed = order.seed + i
            picture: dict[str, Any] = {}
            if isinstance(order, Edit) and ref is not None:
                picture = {"reference": order.references[ref].digest, "strength": order.sent_strength}
            picture.update(_v3_keys(order, ref))
            key = fingerprint(order.kind, endpoint=endpoint, api=order.api, model=order.model,
                              prompt=order.prompt, negative_prompt=order.sent_negative,
                              guidance_scale=order.sent_guidance, width=order.width, height=order.height,
                              seed=seed, output_format=order.output_format if order.api == "v3" else None,
                              **picture)
            units.append(Unit(len(units), seed, key, ref))
    return units


def _v3_keys(order: PictureOrder, ref: int | None) -> dict[str, Any]:
    """What else tells a v3 request apart: a model other than the model name's own, the LoRAs, the mask, the
    control mode (left out when absent, so that earlier receipts still match)."""
    if order.api != "v3":
        return {}
    keys: dict[str, Any] = {}
    if order.v3_model.id != V3_MODEL_PATHS.get(order.model):
        keys["v3_model"] = order.v3_model.id
    if order.loras:
        keys["loras"] = [lora.as_json() for lora in order.loras]
    if isinstance(order, Inpaint) and ref is not None:
        keys["mask"] = order.pictures[ref].digest
    if isinstance(order, ControlNet):
        keys["mode"] = order.mode
    return keys


def _picture(order: Order) -> PictureOrder:
    if isinstance(order, QingboTasks):
        raise TypeError("WaveSpeed takes picture orders, not Qingbo tasks")
    return order


class _WaveSpeed:
    """What both WaveSpeed protocols share: the name, the planning and the price."""

    name: ProviderName = "wavespeed"
    label = WAVESPEED.name

    def __init__(self, clients: Clients, funds: Funds | None = None) -> None:
        self._clients = clients
        self._funds = funds

    def plan(self, order: Order, endpoint: str) -> list[Unit]:
        return picture_units(_picture(order), endpoint)

    def price(self, order: Order) -> float:
        """WaveSpeed's own price for the request where it quotes one (kept an hour), else the catalog's."""
        if self._funds is None:
            return _picture(order).price
        self._funds.prices.client = self._clients.v3()
        usd, _source = self._funds.prices.price_of(order)
        return usd

    def check_funds(self, order: Order, units: int, call: Call) -> float | None:
        if self._funds is None or units <= 0:
            return None
        client = self._clients.v3()
        self._funds.balance.client = client
        return self._funds.balance.check(self.price(order) * units, key_id=client.transport.api_key(),
                                         deadline=call.deadline, cancel_check=call.cancel, on_retry=call.on_retry)

    def model_id(self, order: Order) -> str:
        picture = _picture(order)
        return picture.v3_model.id if picture.api == "v3" else picture.model

    def cancel(self, task_id: str) -> bool:
        return False  # WaveSpeed documents no cancel


class ImagesProvider(_WaveSpeed):
    """``/v1/images``: the answer is the picture. A request whose run died while sending it cannot be looked up
    (the API keeps no history), so it stays uncertain."""

    def endpoint(self) -> str:
        return self._clients.images().transport.base_url

    def what(self, order: Order) -> str:
        return "the image request"

    def submit(self, order: Order, unit: Unit, call: Call, *, idempotency_key: Callable[[], str]) -> Handle:
        picture = _picture(order)
        client = self._clients.images(picture.timeout)
        call.on_state("requesting")
        options: dict[str, Any] = dict(
            negative_prompt=picture.negative_prompt, guidance_scale=picture.guidance_scale, width=picture.width,
            height=picture.height, seed=unit.seed, n=1, model=picture.model,
            response_format=picture.response_format, deadline=call.deadline, on_retry=call.on_retry,
            cancel_check=call.cancel)
        if isinstance(picture, Edit) and unit.reference is not None:
            strength = picture.sent_strength
            result = client.edit(picture.references[unit.reference].upload, picture.prompt,
                                 strength=0.5 if strength is None else strength, **options)
        else:
            result = client.generate(picture.prompt, **options)
        return Handle(result=result, cost_usd=picture.price)

    def earlier(self, task_id: str) -> Handle:
        raise ValueError("/v1/images has no task ids")

    def collect(self, handle: Handle, call: Call, *, seed: int | None = None,
                size: tuple[int, int] | None = None) -> GenerationResult:
        if handle.result is None:
            raise ValueError("a /v1/images handle carries its result")
        return handle.result

    def fetch_again(self, order: Order, unit: Unit, urls: Sequence[str], kept: dict[str, object],
                    call: Call) -> GenerationResult:
        from ..images import check_picture  # here: Pillow and numpy load only when a picture is read

        picture = _picture(order)
        client = self._clients.images(picture.timeout)
        call.on_state("downloading a picture paid earlier")
        try:
            images = client.transport.download_all(list(urls), deadline=call.deadline)
        except ResultExpiredError as err:
            raise ResultExpiredError(
                f"The picture paid for earlier with these inputs could not be downloaded again: its URL has "
                f"expired ({err}). Nothing was charged now; queue again to pay for a new one.",
                provider=self.label, status=err.status, code=err.code) from err
        for data in images:
            check_picture(data, source="WaveSpeed's result URL")
        return GenerationResult(provider=self.label, protocol="images", model=picture.model, images=images,
                                prompt_sha256=str(kept.get("prompt_sha256") or ""), urls=list(urls),
                                seeds=[unit.seed] * len(images), size=picture.size,
                                notes=["downloaded again from the URL of a request paid earlier; nothing charged "
                                       "now"])

    def recover(self, order: Order, since: float, until: float, known: Container[str], call: Call) -> Recovery:
        return Recovery()  # no history to look in: uncertain


class V3Provider(_WaveSpeed):
    """WaveSpeed's v3 predictions. References and masks are uploaded once per run, however many units use them;
    a request whose run died while sending it is found again in WaveSpeed's prediction history."""

    def __init__(self, clients: Clients, funds: Funds | None = None) -> None:
        super().__init__(clients, funds)
        self._uploads: dict[str, str] = {}
        self._upload_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def endpoint(self) -> str:
        return self._clients.v3().transport.base_url

    def what(self, order: Order) -> str:
        return "the prediction request"

    def _upload(self, place: str, upload: tuple[bytes, str, str], call: Call) -> str:
        """The URL of an uploaded picture: one upload per picture and run, even when units ask side by side."""
        with self._guard:
            lock = self._upload_locks.setdefault(place, threading.Lock())
        with lock:
            if place not in self._uploads:
                call.on_state("uploading")
                self._uploads[place] = self._clients.v3().upload(
                    *upload, deadline=call.deadline, on_retry=call.on_retry, cancel_check=call.cancel)
            return self._uploads[place]

    def submit(self, order: Order, unit: Unit, call: Call, *, idempotency_key: Callable[[], str]) -> Handle:
        picture = _picture(order)
        reference: dict[str, Any] = {}
        if isinstance(picture, Edit) and unit.reference is not None:
            ref = picture.references[unit.reference]
            # One upload per picture of the order, shared by its units (a count of N edits of one reference).
            place = f"{id(picture)}:{unit.reference}:{ref.digest}"
            reference = {"image_url": self._upload(place, ref.upload, call), "strength": picture.sent_strength}
            if isinstance(picture, Inpaint):
                reference["mask_url"] = self._upload(place + ":mask", picture.pictures[unit.reference].mask, call)
        if isinstance(picture, ControlNet):
            reference["mode"] = picture.mode
        if picture.loras:
            reference["loras"] = [lora.as_json() for lora in picture.loras]
        call.on_state("requesting")
        first = self._clients.v3().submit(
            picture.prompt, model=picture.v3_model.id, negative_prompt=picture.sent_negative, width=picture.width,
            height=picture.height, seed=unit.seed, output_format=picture.output_format,
            base64_output=picture.response_format == "b64_json", deadline=call.deadline, on_retry=call.on_retry,
            cancel_check=call.cancel, **reference)
        return Handle(task_id=first.id, first=first, cost_usd=picture.price)

    def earlier(self, task_id: str) -> Handle:
        return Handle(task_id=task_id)

    def collect(self, handle: Handle, call: Call, *, seed: int | None = None,
                size: tuple[int, int] | None = None) -> GenerationResult:
        task_id = str(handle.task_id)
        return self._clients.v3().collect(
            task_id, first=handle.first, seed=seed, size=size, on_progress=call.on_progress,
            deadline=call.deadline, sleep=call.sleep, cancel_check=call.cancel, on_retry=call.on_retry,
            resume_hint=call.resume_hint(task_id))

    def fetch_again(self, order: Order, unit: Unit, urls: Sequence[str], kept: dict[str, object],
                    call: Call) -> GenerationResult:
        raise ValueError("a v3 prediction is collected by its id")

    def recover(self, order: Order, since: float, until: float, known: Container[str], call: Call) -> Recovery:
        call.on_state("looking for the prediction of a run that stopped")
        try:
            found = self._clients.v3().find_orphans(_picture(order).v3_model.id, since=since, until=until,
                                                    known_ids=known, deadline=call.deadline,
                                                    cancel_check=call.cancel)
        except APIError as err:
            return Recovery(reason=str(err))
        if not found:
            return Recovery(absent=True)
        if len(found) > 1:
            return Recovery(candidates=len(found))
        return Recovery(task_id=found[0].id, model=found[0].model)
