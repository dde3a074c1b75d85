"""The engine: plan an order into paid units, serve each from its receipt or buy it, record every task id, collect.

Every entry point drives it: the nodes, the CLI's single commands, ``batch`` and ``tasks resume``. A unit is one
paid picture (or one Qingbo task): picture *i* of an order uses ``seed + i``, everywhere, so equal orders send equal
requests and find equal receipts. Progress, Cancel, the clock and sleep are passed in; the engine knows nothing of
ComfyUI or argparse, and its messages speak of the library.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from .cancel import CancelToken
from .catalog import V3_MODEL_PATHS
from .clients import Clients
from .deadline import Deadline
from .errors import (
    APIError,
    CancelledError,
    ClaimWaitTimeoutError,
    ResultDownloadError,
    ResultExpiredError,
    TaskFailedError,
    TaskTimeoutError,
    UncertainChargeError,
    ZImageError,
)
from .limits import LIMITS, ProviderLimits
from .logs import logger, prompt_hash
from .orders import ControlNet, Edit, Inpaint, PictureOrder, QingboTasks
from .parallel import JobOutcome, Once, run_jobs
from .progress import BatchProgress
from .results import GenerationResult
from .store import Claim, LeaseKeeper, Receipt, Store, new_owner

__all__ = ["Engine", "Unit", "RunCancelled", "submit_error", "collect_error", "fingerprint"]

RECEIPT_NOTE = "served from the local receipt"
GRACE_SECONDS = 0.5  # after Cancel, how long a node waits for its requests in flight before it lets them go
SUBMIT_WAIT_SECONDS = 120.0  # how long a Qingbo submit waits for another run submitting the same inputs
HOLDER_POLL_SECONDS = 0.25  # how often a run waiting on another run's claim looks again (real time: another process)
R = TypeVar("R")


def fingerprint(kind: str, **params: Any) -> str:
    """A stable id of a request: its kind and every parameter that changes the picture (never the key)."""
    canonical = json.dumps({"kind": kind, **params}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


class RunCancelled(CancelledError):
    """The run was cancelled; ``outcomes`` holds what finished before (paid pictures are kept in receipts)."""

    def __init__(self, outcomes: Sequence[JobOutcome[Any]]) -> None:
        super().__init__("The run was cancelled.")
        self.outcomes = list(outcomes)


@dataclass(frozen=True)
class Unit:
    """One paid picture or task of an order: its place, its seed and the fingerprint of its request."""

    index: int
    seed: int | None
    key: str
    reference: int | None = None  # which reference of an edit


class Engine:
    """Runs orders for one caller.

    Args:
        clients: the provider clients (keys, base URLs, transport sleep).
        progress: where each unit's progress goes; made per run when None.
        token: the caller's Cancel, handed to every wait and retry sleep down to the transport: units not started
            never start, and waits stop within a slice.
        abandon: on Cancel, stop waiting for requests already in flight after a short grace (a node, whose artist
            is waiting); False lets them finish so that their ids reach the store (the command line, at Ctrl-C).
        on_tick: runs in the caller's thread between short waits (redraw a progress bar there).
        clock, sleep: the time source and sleep of every wait.
        limits: the per-provider limit of paid requests in flight.
        paying: ``paying(what)`` gives a context manager held while a paid request is being sent.
        on_task_id, on_collected: told when a task id is issued or earlier found, and when it was collected.
        on_retry: told ``(unit index, notice)`` before each retry wait of a unit's requests (the notice is None once
            a retried request got its answer); the unit's progress state shows the notice meanwhile.
        resume_hint: ``resume_hint(task_id, provider)`` ends a timeout's message: how this caller collects it later.
        retry_uncertain: send again a request that an earlier run may have been charged for with no way to tell
            (otherwise such a unit fails with :class:`UncertainChargeError`).

    Every paid unit goes through the store's claim (:meth:`Store.claim`): one run pays, the others with the same
    inputs wait for its outcome and get the same picture; a run that died is taken over once its lease expires.
    """

    def __init__(self, clients: Clients, *, progress: BatchProgress | None = None,
                 token: CancelToken | None = None, abandon: bool = True,
                 on_tick: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, limits: ProviderLimits = LIMITS,
                 paying: Callable[[str], AbstractContextManager[Any]] | None = None,
                 on_task_id: Callable[[str, str], None] | None = None,
                 on_collected: Callable[[str], None] | None = None,
                 on_retry: Callable[[int, Any], None] | None = None,
                 resume_hint: Callable[[str, str], str] | None = None, workers: int = 4,
                 retry_uncertain: bool = False) -> None:
        self.clients = clients
        self.store: Store = clients.store
        self.owner = new_owner()
        self.keeper = LeaseKeeper(self.store)
        self._claims = itertools.count()
        self._local = threading.local()  # the claim owner of the unit this thread is buying
        self.retry_uncertain = retry_uncertain
        self.progress = progress
        self.token = token if token is not None else CancelToken()
        # run_jobs abandons the jobs in flight once its event is set: the token's own, or one that is never set.
        self._abandon_event = self.token.event if abandon else threading.Event()
        self.on_tick = on_tick
        self._on_retry = on_retry
        self._resume_hint = resume_hint
        self.clock = clock
        self.sleep = sleep
        self.limits = limits
        self._paying = paying
        self._on_task_id = on_task_id or (lambda _tid, _provider: None)
        self._on_collected = on_collected or (lambda _tid: None)
        self.workers = workers

    def configure(self, **hooks: Any) -> None:
        """Replace some of the hooks given at construction (``paying``, ``on_task_id``, ``on_collected``,
        ``on_tick``)."""
        for name, value in hooks.items():
            if name not in ("paying", "on_task_id", "on_collected", "on_tick"):
                raise TypeError(f"unknown engine hook {name!r}")
            if name == "on_tick":
                self.on_tick = value
            elif name == "paying":
                self._paying = value
            else:
                setattr(self, f"_{name}", value or (lambda *_args: None))

    # -- planning -------------------------------------------------------------------------------------------------

    def plan(self, order: PictureOrder | QingboTasks) -> list[Unit]:
        """The paid units of ``order``, in output order, each with its seed and request fingerprint."""
        if isinstance(order, QingboTasks):
            endpoint = self.clients.qingbo().transport.base_url
            return [Unit(i, order.seed_of(i), fingerprint(
                order.kind, endpoint=endpoint, prompt=order.prompt, index=i, **order.options(),
                seed=order.seed_of(i))) for i in range(order.count)]
        endpoint = self._picture_client(order).transport.base_url
        units: list[Unit] = []
        refs: Sequence[int | None] = range(len(order.references)) if isinstance(order, Edit) else [None]
        for ref in refs:
            for i in range(order.count):
                seed = order.seed + i
                picture: dict[str, Any] = {}
                if isinstance(order, Edit) and ref is not None:
                    picture = {"reference": order.references[ref].digest, "strength": order.sent_strength}
                picture.update(self._v3_keys(order, ref))
                key = fingerprint(order.kind, endpoint=endpoint, api=order.api, model=order.model,
                                  prompt=order.prompt, negative_prompt=order.sent_negative,
                                  guidance_scale=order.sent_guidance, width=order.width, height=order.height,
                                  seed=seed, output_format=order.output_format if order.api == "v3" else None,
                                  **picture)
                units.append(Unit(len(units), seed, key, ref))
        return units

    @staticmethod
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

    # -- buying one unit through the store's claim ------------------------------------------------------------------

    def _buy(self, unit: Unit, progress: BatchProgress, timeout: float, *,
             serve: Callable[[Receipt], R | None], pay: Callable[[], R],
             recover: Callable[[Claim], R]) -> R:
        """One paid unit: serve what was bought under its fingerprint, else wait for the run paying for it, else
        claim it and pay (or, taking over a run that died while sending, recover that request)."""
        deadline = Deadline.after(float(timeout), time.monotonic)  # another process's pace: real time
        # Each unit bought claims as an owner of its own, so two units (or two threads) with one fingerprint never
        # both pay.
        self._local.owner = owner = f"{self.owner}/{next(self._claims)}"
        while True:
            self.token.raise_if_cancelled("The run was cancelled before this unit started.")
            outcome = self.store.claim(unit.key, owner, retry_uncertain=self.retry_uncertain)
            if outcome.kind == "receipt" and outcome.receipt is not None:
                served = serve(outcome.receipt)
                if served is not None:
                    return served
                self.store.drop_result(unit.key)  # kept but unusable here (its files gone): decide again
                continue
            if outcome.kind == "uncertain" and outcome.previous is not None:
                raise _uncertain(outcome.previous)
            if outcome.kind == "held" and outcome.previous is not None:
                self._wait_for_holder(unit, progress, outcome.previous, deadline)
                continue
            self.keeper.hold(unit.key, owner)
            try:
                if outcome.previous is not None:
                    return recover(outcome.previous)
                return pay()
            except BaseException as err:
                self._unclaim(unit.key, err)
                raise
            finally:
                self.keeper.drop(unit.key, owner)

    @property
    def _owner(self) -> str:
        """The claim owner of the unit the calling thread is buying."""
        return str(self._local.owner)

    def _wait_for_holder(self, unit: Unit, progress: BatchProgress, holder: Claim, deadline: Deadline) -> None:
        since = time.strftime("%H:%M:%S", time.localtime(holder.claimed_at))
        progress.update(unit.index, None, f"waiting for another run with the same inputs (since {since})")
        left = deadline.left()
        if left <= 0:
            raise ClaimWaitTimeoutError(
                f"Another run with the same inputs has been paying for this picture since {since} and had not "
                f"finished within the timeout ({deadline.seconds:g} s). Nothing was sent twice: queue the same "
                "inputs again once it ends to get its picture at no cost.")
        if self.token.event.wait(min(HOLDER_POLL_SECONDS, left)) or self.token.cancelled():
            raise CancelledError("The run was cancelled while another run with the same inputs was paying.")

    def _unclaim(self, key: str, err: BaseException) -> None:
        """After a failed unit: release its claim when nothing can have been charged, else leave it to the next run
        to recover (expired at once). The paid request's state is the claim's: ``sending`` means it may have gone."""
        try:
            claim = self.store.claim_of(key)
            if claim is None or claim.owner != self._owner or claim.state == "uncertain":
                return  # not ours any more, or kept on purpose: the same inputs are not sent again unasked
            if claim.state == "sending" and _may_have_charged(err):
                self.store.expire(key, self._owner)
            else:
                self.store.release(key, self._owner)
        except OSError:
            pass  # the claim lapses with its lease; the next run recovers it

    @contextmanager
    def _sending(self, key: str, what: str) -> Iterator[None]:
        """Held while a paid request is sent: noted in the store first (no note, no request)."""
        self.store.mark_sending(key, self._owner, detail={"what": what})
        with self._paying_for(what):
            yield

    @staticmethod
    def _recorded(record: Callable[[], None], what: str) -> None:
        """Record what a paid request bought (and release its claim); if the store fails now, say what was paid."""
        try:
            record()
        except OSError as err:
            raise ZImageError(f"{what} was paid, but the task store could not record it ({err}). Keep this "
                              "message: it is the only record.") from err

    # -- pictures (Generate, Edit, Inpaint, ControlNet) ---------------------------------------------------------------

    def pictures(self, order: PictureOrder) -> list[JobOutcome[GenerationResult]]:
        """Every picture of ``order``, one outcome per unit (served from its receipt, or bought).

        Raises :class:`RunCancelled` on Cancel, once the waits have stopped.
        """
        units = self.plan(order)
        progress = self._progress(len(units))
        self.store.check_writable()  # no record, no payment: before any upload or request
        references = order.references if isinstance(order, Edit) else ()
        urls = Once(lambda ref, call: self.clients.v3().upload(*references[ref].upload, **call))
        masks = Once(lambda ref, call: self.clients.v3().upload(*order.pictures[ref].mask, **call)) if isinstance(
            order, Inpaint) else None

        def job(unit: Unit) -> Callable[[], GenerationResult]:
            def run() -> GenerationResult:
                served = self._served(unit, progress)
                if served is not None:
                    return served
                with self._slot("wavespeed", unit.index, progress):
                    if order.api == "v3":
                        return self._v3_picture(order, unit, urls, masks, progress)
                    return self._v1_picture(order, unit, progress)
            return run

        return self._run([job(unit) for unit in units], progress)

    def _served(self, unit: Unit, progress: BatchProgress) -> GenerationResult | None:
        """The unit's kept picture, before any claim (the common repeat costs one indexed read)."""
        saved = self.store.load_result(unit.key)
        if saved is not None:
            progress.update(unit.index, 1.0, "done (receipt)")
        return saved

    def _picture_client(self, order: PictureOrder) -> Any:
        return self.clients.v3() if order.api == "v3" else self.clients.images(order.timeout)

    def _v1_picture(self, order: PictureOrder, unit: Unit, progress: BatchProgress) -> GenerationResult:
        """A ``/v1/images`` picture: the answer is the picture, so a run that died while sending leaves it
        uncertain (the API keeps no history to look it up)."""
        client = self.clients.images(order.timeout)

        def serve(receipt: Receipt) -> GenerationResult | None:
            saved = self.store.load_result(unit.key)
            if saved is not None:
                progress.update(unit.index, 1.0, "done (receipt)")
                return saved
            if receipt.urls is None:
                return None
            return download_again(receipt.urls)

        def download_again(kept: dict[str, Any]) -> GenerationResult:
            """The picture of a request paid earlier whose download failed: fetched from its URLs, free."""
            from .images import check_picture  # here: Pillow and numpy load only when a picture is read
            progress.update(unit.index, 0.0, "downloading a picture paid earlier")
            urls = [str(url) for url in kept.get("urls") or []]
            deadline = Deadline.after(float(order.timeout), self.clock)
            try:
                images = client.transport.download_all(urls, deadline=deadline)
                for data in images:
                    check_picture(data, source="WaveSpeed's result URL")
            except ResultExpiredError as err:
                self.store.drop_result(unit.key)
                raise ResultExpiredError(
                    f"The picture paid for earlier with these inputs could not be downloaded again: its URL has "
                    f"expired ({err}). Nothing was charged now; queue again to pay for a new one.",
                    provider="WaveSpeed", status=err.status, code=err.code) from err
            size = kept.get("size")
            result = GenerationResult(provider="WaveSpeed", protocol="images", model=str(kept.get("model") or ""),
                                      images=images, prompt_sha256=str(kept.get("prompt_sha256") or ""),
                                      urls=urls, seeds=[unit.seed] * len(images),
                                      size=(int(size[0]), int(size[1])) if isinstance(size, list) else None,
                                      notes=["downloaded again from the URL of a request paid earlier; nothing "
                                             "charged now"])
            self.store.keep_result(unit.key, result)
            progress.update(unit.index, 1.0, "done")
            return result

        def pay() -> GenerationResult:
            progress.update(unit.index, 0.0, "requesting")
            options = dict(negative_prompt=order.negative_prompt, guidance_scale=order.guidance_scale,
                           width=order.width, height=order.height, seed=unit.seed, n=1, model=order.model,
                           response_format=order.response_format, **self._call(unit.index, progress, order.timeout))
            try:
                with self._sending(unit.key, "the image request"):
                    if isinstance(order, Edit) and unit.reference is not None:
                        strength = order.sent_strength
                        result = client.edit(order.references[unit.reference].upload, order.prompt,
                                             strength=0.5 if strength is None else strength, **options)
                    else:
                        result = client.generate(order.prompt, **options)
            except ResultDownloadError as err:
                # Paid, and its picture is at the provider: keep the URLs, so the next run downloads it for free.
                kept = {"urls": err.urls, "model": order.model, "size": [order.width, order.height],
                        "prompt_sha256": prompt_hash(order.prompt)}
                self._recorded(lambda: self.store.finish(unit.key, self._owner, urls=kept), "The picture")
                raise
            self._recorded(lambda: self.store.keep_result(unit.key, result, owner=self._owner), "The picture")
            progress.update(unit.index, 1.0, "done")
            return result

        def recover(previous: Claim) -> GenerationResult:
            if self.retry_uncertain:
                return pay()  # sent again on purpose
            self.store.mark_uncertain(unit.key, self._owner, previous.detail)
            raise _uncertain(previous)

        return self._buy(unit, progress, order.timeout, serve=serve, pay=pay, recover=recover)

    def _v3_picture(self, order: PictureOrder, unit: Unit, urls: Once, masks: Once | None,
                    progress: BatchProgress) -> GenerationResult:
        """Collect the prediction bought earlier for this unit if there is one, else submit and collect it.

        A timeout or Cancel leaves the prediction running; the same order again collects it without paying twice.
        A run that died between sending and the answer is recovered from WaveSpeed's prediction history.
        """
        client = self.clients.v3()
        call = self._call(unit.index, progress, order.timeout)

        def collect(task_id: str, first: Any = None) -> GenerationResult:
            if first is None:
                progress.update(unit.index, 0.0, "collecting an earlier prediction")
            result = self._collect_one(client, "wavespeed", task_id, unit.index, progress, call["deadline"],
                                       first=first, seed=unit.seed, size=order.size)
            try:
                self.store.keep_result(unit.key, result)
            except OSError as err:  # the task and its pictures are recorded by id: collectable later
                logger.warning("could not keep a receipt: %s", err)
            progress.update(unit.index, 1.0, "done")
            return result

        def serve(receipt: Receipt) -> GenerationResult | None:
            saved = self.store.load_result(unit.key)
            if saved is not None:
                progress.update(unit.index, 1.0, "done (receipt)")
                return saved
            usable, _spent = self.store.task_receipt(unit.key)
            return collect(usable) if usable is not None else None

        def pay() -> GenerationResult:
            reference: dict[str, Any] = {}
            if isinstance(order, Edit) and unit.reference is not None:
                progress.update(unit.index, 0.0, "uploading")
                reference = {"image_url": urls.get(unit.reference, call), "strength": order.sent_strength}
                if masks is not None:
                    reference["mask_url"] = masks.get(unit.reference, call)
            if isinstance(order, ControlNet):
                reference["mode"] = order.mode
            if order.loras:
                reference["loras"] = [lora.as_json() for lora in order.loras]
            progress.update(unit.index, 0.0, "requesting")
            with self._sending(unit.key, "the prediction request"):
                first = client.submit(order.prompt, model=order.v3_model.id, negative_prompt=order.sent_negative,
                                      width=order.width, height=order.height, seed=unit.seed,
                                      output_format=order.output_format,
                                      base64_output=order.response_format == "b64_json", **reference, **call)
            self._recorded(lambda: self.store.finish(unit.key, self._owner, task_id=first.id),
                           f"The prediction {first.id}")
            return collect(first.id, first)

        def recover(previous: Claim) -> GenerationResult:
            since = previous.sending_at or previous.claimed_at
            progress.update(unit.index, 0.0, "looking for the prediction of a run that stopped")
            try:
                found = client.find_orphans(order.v3_model.id, since=since, until=time.time(),
                                            known_ids=_StoredIds(self.store), deadline=call["deadline"],
                                            cancel_check=self.token)
            except APIError as err:
                if self.retry_uncertain:
                    return pay()
                self.store.mark_uncertain(unit.key, self._owner, {**previous.detail, "history": str(err)})
                raise _uncertain(previous, provider="WaveSpeed", reason=str(err)) from err
            if not found or (len(found) > 1 and self.retry_uncertain):
                return pay()  # the request never reached WaveSpeed (nothing was charged), or sent again on purpose
            if len(found) > 1:
                self.store.mark_uncertain(unit.key, self._owner, {**previous.detail, "candidates": len(found)})
                raise _uncertain(previous, provider="WaveSpeed", candidates=len(found))
            task_id = found[0].id
            self._recorded(lambda: self._adopt(unit.key, task_id, order), f"The prediction {task_id}")
            self._on_task_id(task_id, "wavespeed")
            return collect(task_id)

        return self._buy(unit, progress, order.timeout, serve=serve, pay=pay, recover=recover)

    def _adopt(self, key: str, task_id: str, order: PictureOrder) -> None:
        """Record a prediction found in the provider's history as the one this unit paid for."""
        self.store.record_submitted(task_id, provider="wavespeed", model=order.v3_model.id,
                                    prompt_sha256=prompt_hash(order.prompt), params={"recovered": True},
                                    base_url=self.clients.v3().transport.base_url)
        self.store.finish(key, self._owner, task_id=task_id)

    # -- Qingbo tasks ---------------------------------------------------------------------------------------------

    def submit(self, order: QingboTasks) -> list[JobOutcome[Any]]:
        """Queue every task of ``order``; a task submitted earlier with the same inputs is returned, not re-bought.

        Each outcome's value is a :class:`~zimage_api.qingbo.QingboTask` (``raw["receipt"]`` when it was earlier).
        The same Idempotency-Key goes with every retry and re-run until the task is spent, so a submit whose answer
        was lost, or whose run died, is never paid twice.
        """
        from .polling import TaskState
        from .qingbo import QingboTask

        units = self.plan(order)
        progress = self._progress(len(units))
        self.store.check_writable()  # no record, no payment: before any request
        client = self.clients.qingbo()

        def job(unit: Unit) -> Callable[[], Any]:
            def earlier(task_id: str) -> Any:
                progress.update(unit.index, 1.0, "accepted earlier")
                self._on_task_id(task_id, "qingbo")
                return QingboTask(task_id=task_id, state=TaskState.QUEUED, raw={"receipt": True})

            def serve(receipt: Receipt) -> Any:
                usable, _spent = self.store.task_receipt(unit.key)
                return earlier(usable) if usable is not None else None

            def pay() -> Any:
                key = self.store.idempotency_key(unit.key)
                with self._slot("qingbo", unit.index, progress), self._sending(unit.key, "the task request"):
                    task = client.submit(order.prompt, seed=unit.seed, idempotency_key=key,
                                         on_retry=self._retry_reporter(unit.index, progress),
                                         cancel_check=self.token, **order.options())  # type: ignore[arg-type]
                self._recorded(lambda: self.store.finish(unit.key, self._owner, task_id=task.task_id),
                               f"The task {task.task_id}")
                self._on_task_id(task.task_id, "qingbo")
                progress.update(unit.index, 1.0, "accepted")
                return task

            def run() -> Any:
                progress.update(unit.index, 0.0, "submitting")
                usable, _spent = self.store.task_receipt(unit.key)
                if usable is not None:
                    return earlier(usable)
                # A run that died while sending is recovered by sending again under the same Idempotency-Key.
                return self._buy(unit, progress, SUBMIT_WAIT_SECONDS, serve=serve, pay=pay,
                                 recover=lambda _claim: pay())
            return run

        return self._run([job(unit) for unit in units], progress)

    def collect(self, task_ids: Sequence[str], *, provider: str = "qingbo", timeout: float = 120.0,
                extras: Sequence[dict[str, Any]] | None = None) -> list[JobOutcome[GenerationResult]]:
        """Wait for existing tasks side by side (never re-submitting) and return their pictures, one per id.

        One deadline for all of them. A task collected earlier comes from its local copy without a request. On
        Cancel, the tasks not collected are cancelled at the provider while still queued, where it can cancel.
        """
        progress = self._progress(len(task_ids))
        client = self.clients.tasks(provider)
        deadline = Deadline.after(timeout, self.clock)
        collected: set[str] = set()

        def job(index: int, task_id: str) -> Callable[[], GenerationResult]:
            def run() -> GenerationResult:
                progress.update(index, 0.0, "waiting")
                result = self._collect_one(client, provider, task_id, index, progress, deadline,
                                           **(extras[index] if extras else {}))
                collected.add(task_id)
                progress.update(index, 1.0, "done")
                return result
            return run

        try:
            return self._run([job(i, tid) for i, tid in enumerate(task_ids)], progress)
        except RunCancelled:
            self._cancel_queued(client, [tid for tid in task_ids if tid not in collected])
            raise

    def _collect_one(self, client: Any, provider: str, task_id: str, index: int, progress: BatchProgress,
                     deadline: Deadline, **options: Any) -> GenerationResult:
        self._on_task_id(task_id, provider)
        hint = self._resume_hint(task_id, provider) if self._resume_hint is not None else None
        result: GenerationResult = client.collect(
            task_id, on_progress=progress.callback(index), deadline=deadline, sleep=self.sleep,
            cancel_check=self.token, on_retry=self._retry_reporter(index, progress), resume_hint=hint, **options)
        self._on_collected(task_id)
        return result

    def _call(self, index: int, progress: BatchProgress, timeout: float) -> dict[str, Any]:
        """What a unit's requests share: one deadline from now, its retry notices, and the Cancel token."""
        return {"deadline": Deadline.after(float(timeout), self.clock),
                "on_retry": self._retry_reporter(index, progress), "cancel_check": self.token}

    def _retry_reporter(self, index: int, progress: BatchProgress) -> Callable[[Any], None]:
        def report(notice: Any) -> None:
            progress.retrying(index, None if notice is None else str(notice))
            if self._on_retry is not None:
                self._on_retry(index, notice)
        return report

    @staticmethod
    def _cancel_queued(client: Any, task_ids: Sequence[str]) -> None:
        """Best-effort remote cancel of every task that is still queued (one request each, side by side)."""
        if not task_ids:
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(4, len(task_ids)), thread_name_prefix="zimage-cancel") as pool:
            list(pool.map(lambda tid: client.try_cancel(None, tid), task_ids))

    # -- running --------------------------------------------------------------------------------------------------

    def _progress(self, units: int) -> BatchProgress:
        if self.progress is None or len(self.progress) != max(units, 1):
            self.progress = BatchProgress(units)
        return self.progress

    def _run(self, jobs: Sequence[Callable[[], Any]], progress: BatchProgress) -> list[JobOutcome[Any]]:
        def guarded(job: Callable[[], Any]) -> Callable[[], Any]:
            def start() -> Any:
                self.token.raise_if_cancelled("The run was cancelled before this unit started.")
                return job()
            return start

        outcomes = run_jobs([guarded(job) for job in jobs], cancel=self._abandon_event, on_tick=self._tick,
                            wake=progress.changed, workers=self.workers, grace_seconds=GRACE_SECONDS)
        stopped = self.token.cancelled()
        if any(isinstance(o.error, (CancelledError, InterruptedError)) for o in outcomes) or (
                stopped and not all(o.finished for o in outcomes)):
            raise RunCancelled(outcomes)
        return outcomes  # everything finished, even if Cancel came at the end: paid work is delivered

    def _tick(self) -> None:
        self.token.cancelled()  # asks the caller's check (ComfyUI's flag) from the caller's own thread
        if self.on_tick is not None:
            self.on_tick()

    @contextmanager
    def _slot(self, provider: str, index: int, progress: BatchProgress) -> Iterator[None]:
        name = "WaveSpeed" if provider == "wavespeed" else "Qingbo"

        def waiting(in_flight: int, limit: int) -> None:
            progress.update(index, None, f"waiting for a free {name} slot ({in_flight} of {limit} in flight)")

        with self.limits.slot(provider, cancelled=self.token, on_wait=waiting):
            yield

    def _paying_for(self, what: str) -> AbstractContextManager[Any]:
        return self._paying(what) if self._paying is not None else nullcontext()


class _StoredIds(Collection[str]):
    """The task ids the store knows, asked one at a time (an indexed lookup each)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and self._store.task(task_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _may_have_charged(err: BaseException) -> bool:
    """Whether a paid request that ended in ``err`` may have been processed (and charged) by the provider."""
    if isinstance(err, APIError):
        return False  # the provider answered with an error: nothing was bought
    if isinstance(err, ZImageError) and not isinstance(err, CancelledError):
        return bool(getattr(err, "may_have_processed", True))
    return True  # cut short (Cancel, Ctrl-C, a crash of the caller): it may have gone out


def _uncertain(claim: Claim, *, provider: str = "", candidates: int | None = None,
               reason: str | None = None) -> UncertainChargeError:
    """The error for a unit whose earlier run may have been charged with no way to tell."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(claim.sending_at or claim.claimed_at))
    what = str(claim.detail.get("what") or "its paid request")
    # A claim left uncertain keeps why in its detail: later runs say the same.
    if candidates is None and isinstance(claim.detail.get("candidates"), int):
        candidates = int(claim.detail["candidates"])
    if reason is None and claim.detail.get("history"):
        reason = str(claim.detail["history"])
    provider = provider or str(claim.detail.get("provider") or "")
    if candidates is not None:
        found = (f"WaveSpeed's history shows {candidates} predictions of this model from that time that are not "
                 "recorded here, so it cannot tell which one was this picture")
    elif reason is not None:
        found = f"its prediction history could not be read ({reason})"
    else:
        found = "that API keeps no history to check"
    return UncertainChargeError(
        f"An earlier run with the same inputs sent {what} at {when} and stopped before the answer; it may have "
        f"been charged, and {found}. Nothing was sent now. Change the seed to pay for a new picture (or send it "
        "again on purpose with --retry-uncertain).", provider=provider, candidates=candidates)


def submit_error(error: BaseException, accepted: Sequence[str], count: int) -> BaseException:
    """The error to raise when some submits failed: if tasks were accepted (and paid), it names them."""
    if not accepted:
        return error
    wrapped = ZImageError(f"{error} Qingbo accepted {len(accepted)} of the {count} tasks before that: "
                          f"{', '.join(accepted)}; collect them by their ids to get their pictures.")
    wrapped.__cause__ = error
    return wrapped


def collect_error(outcomes: Sequence[JobOutcome[GenerationResult]], ids: Sequence[str],
                  timeout: float) -> BaseException | None:
    """One clear error for the collected tasks that did not deliver (None if all did).

    Several timeouts become one message naming every id; a failed task's message names the tasks that did complete,
    which stay collectable at no cost.
    """
    errors = [o.error for o in outcomes if o.error is not None]
    if not errors:
        return None
    timeouts = [e for e in errors if isinstance(e, TaskTimeoutError)]
    if len(timeouts) > 1 and len(timeouts) == len(errors) and any(e.cause is not None for e in timeouts):
        # What the status requests met (an unreachable server...) is the news; the other ids are recorded alike.
        others = ", ".join(e.task_id for e in timeouts[1:])
        return TaskTimeoutError(f"{timeouts[0].message} The same goes for {others}.", task_id=timeouts[0].task_id,
                                provider=timeouts[0].provider, cause=timeouts[0].cause)
    if len(timeouts) > 1 and len(timeouts) == len(errors):
        names = ", ".join(e.task_id for e in timeouts)
        return TaskTimeoutError(
            f"Qingbo tasks {names} were still running after {timeout:g} s. They were not re-submitted, so nothing "
            "was charged twice: collect these ids again to get the pictures.", task_id=timeouts[0].task_id,
            provider="Qingbo")
    first = errors[0]
    delivered = [tid for tid, o in zip(ids, outcomes, strict=True) if o.value is not None]
    if isinstance(first, TaskFailedError) and delivered:
        wrapped = TaskFailedError(
            f"{first.message} The other task(s) {', '.join(delivered)} completed and are kept: collect them without "
            f"{first.task_id} to get their pictures at no cost.", task_id=first.task_id, provider=first.provider,
            code=first.code, retryable=first.retryable)
        wrapped.__cause__ = first
        return wrapped
    return first


