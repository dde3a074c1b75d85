"""The engine: plan an order into paid units, serve each from its receipt or buy it, record every task id, collect.

Every entry point drives it: the nodes, the CLI's single commands, ``batch`` and ``tasks resume``. A unit is one
paid picture (or one task): picture *i* of an order uses ``seed + i``, everywhere, so equal orders send equal
requests and find equal receipts. There is one path for every provider: plan, claim, submit, wait, collect, record.
The providers (:mod:`zimage_api.providers`) say how; the engine never asks which provider, api or order kind it
runs. Progress, Cancel, the clock and sleep are passed in; the engine knows nothing of ComfyUI or argparse.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from .account import Funds, budget_message
from .budget import budget_setting, daily_budget, day_start
from .cancel import CancelToken
from .clients import Clients
from .errors import (
    APIError,
    BudgetExceededError,
    CancelledError,
    ClaimWaitTimeoutError,
    ResultDownloadError,
    TaskFailedError,
    TaskTimeoutError,
    UncertainChargeError,
    ZImageError,
)
from .http.deadline import Deadline
from .http.retry import RetryNotice
from .limits import LIMITS, ProviderLimits
from .logs import logger, prompt_hash
from .orders import Order, PictureOrder, QingboTasks, fingerprint
from .parallel import JobOutcome, run_jobs
from .progress import BatchProgress
from .providers import Accepted, Call, Handle, Provider, ProviderName, Providers, Unit
from .results import GenerationResult
from .store import Claim, LeaseKeeper, Price, Receipt, Store, new_owner

__all__ = ["Engine", "Unit", "RunCancelled", "submit_error", "collect_error", "fingerprint", "Hooks"]

RECEIPT_NOTE = "served from the local receipt"
GRACE_SECONDS = 0.5  # after Cancel, how long a node waits for its requests in flight before it lets them go
BALANCE_SECONDS = 60.0  # the longest the balance check before a run may take
MAX_HOLDER_WAIT_SECONDS = 5.0  # the longest a run waiting on another run's claim goes without looking again
HOLDER_POLL_SECONDS = 0.25  # how often a run waiting on another run's claim looks again (real time: another process)
T = TypeVar("T")


class Configured:
    """The default of a setting that comes from the user's configuration."""


CONFIGURED = Configured()


class RunCancelled(CancelledError):
    """The run was cancelled; ``outcomes`` holds what finished before (paid pictures are kept in receipts)."""

    def __init__(self, outcomes: Sequence[JobOutcome[Any]]) -> None:
        super().__init__("The run was cancelled.")
        self.outcomes: list[JobOutcome[Any]] = list(outcomes)


class Hooks:
    """What a caller is told while the engine works (each optional; none changes what is paid).

    paying: ``paying(what)`` gives a context manager held while a paid request is being sent.
    on_task_id, on_collected: told ``(task_id, provider)`` when a task id is issued or earlier found, and
        ``(task_id)`` once it was collected.
    on_retry: told ``(unit index, notice)`` before each retry wait of a unit's requests (the notice is None once a
        retried request got its answer); the unit's progress state shows the notice meanwhile.
    on_tick: runs in the caller's thread between short waits (redraw a progress bar there).
    resume_hint: ``resume_hint(task_id, provider)`` ends a timeout's message: how this caller collects it later.
    """

    def __init__(self, *, paying: Callable[[str], AbstractContextManager[object]] | None = None,
                 on_task_id: Callable[[str, str], None] | None = None,
                 on_collected: Callable[[str], None] | None = None,
                 on_retry: Callable[[int, RetryNotice | None], None] | None = None,
                 on_tick: Callable[[], None] | None = None,
                 resume_hint: Callable[[str, str], str] | None = None) -> None:
        self.paying = paying
        self.on_task_id = on_task_id
        self.on_collected = on_collected
        self.on_retry = on_retry
        self.on_tick = on_tick
        self.resume_hint = resume_hint


class _Outcome:
    """What one unit's claim loop ended with: a handle to collect (bought now, or ``earlier``), or a picture served
    without paying."""

    def __init__(self, handle: Handle | None = None, served: GenerationResult | None = None,
                 earlier: bool = False) -> None:
        self.handle = handle
        self.served = served
        self.earlier = earlier


class Engine:
    """Runs orders for one caller.

    Args:
        clients: the provider clients (keys, base URLs, transport sleep) and the store they record in.
        progress: where each unit's progress goes; made per run when None.
        token: the caller's Cancel, handed to every wait and retry sleep down to the transport: units not started
            never start, and waits stop within a slice.
        abandon: on Cancel, stop waiting for requests already in flight after a short grace (a node, whose artist
            is waiting); False lets them finish so that their ids reach the store (the command line, at Ctrl-C);
            an event abandons them once it is set (the command line's second Ctrl-C).
        clock, sleep: the time source and sleep of every wait.
        limits: the per-provider limit of paid requests in flight.
        hooks: what the caller is told (see :class:`Hooks`); the keyword arguments of the same names set them too.
        retry_uncertain: send again a request that an earlier run may have been charged for with no way to tell
            (otherwise such a unit fails with :class:`UncertainChargeError`).
        providers: the providers by route (default: WaveSpeed's two protocols and Qingbo, over ``clients``).
        budget: the day's budget in USD (default: the configured one, see :mod:`zimage_api.budget`; None: none).
        funds: the balance readings and quoted prices the caller keeps between runs (see
            :class:`~zimage_api.account.Funds`); None skips the balance check and uses the catalog's prices.

    Every paid unit goes through the store's claim (:meth:`Store.claim`): one run pays, the others with the same
    inputs wait for its outcome and get the same picture; a run that died is taken over once its lease expires.
    """

    def __init__(self, clients: Clients, *, progress: BatchProgress | None = None,
                 token: CancelToken | None = None, abandon: bool | threading.Event = True,
                 on_tick: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, limits: ProviderLimits = LIMITS,
                 paying: Callable[[str], AbstractContextManager[object]] | None = None,
                 on_task_id: Callable[[str, str], None] | None = None,
                 on_collected: Callable[[str], None] | None = None,
                 on_retry: Callable[[int, RetryNotice | None], None] | None = None,
                 resume_hint: Callable[[str, str], str] | None = None, workers: int = 4,
                 retry_uncertain: bool = False, hooks: Hooks | None = None,
                 providers: Providers | None = None, budget: float | None | Configured = CONFIGURED,
                 funds: Funds | None = None) -> None:
        self.clients = clients
        self.store: Store = clients.store
        self.providers = providers if providers is not None else Providers(clients, funds=funds)
        self.balance: float | None = None  # the paying account's balance in USD, once a run has read it
        self.progress = progress
        self.token = token if token is not None else CancelToken()
        # run_jobs abandons the jobs in flight once its event is set: the token's own, the caller's, or one that is
        # never set.
        self._abandon_event = abandon if isinstance(abandon, threading.Event) else (
            self.token.event if abandon else threading.Event())
        self.hooks = hooks if hooks is not None else Hooks(
            paying=paying, on_task_id=on_task_id, on_collected=on_collected, on_retry=on_retry, on_tick=on_tick,
            resume_hint=resume_hint)
        self.clock = clock
        self.sleep = sleep
        self.limits = limits
        self.workers = workers
        self.retry_uncertain = retry_uncertain
        self.budget = daily_budget() if isinstance(budget, Configured) else budget
        self.owner = new_owner()
        self.keeper = LeaseKeeper(self.store)
        self._claims = itertools.count()

    # -- planning -------------------------------------------------------------------------------------------------

    def provider(self, order: Order) -> Provider:
        """The provider that takes ``order``."""
        return self.providers.route(order.route)

    def plan(self, order: Order) -> list[Unit]:
        """The paid units of ``order``, in output order, each with its seed and request fingerprint."""
        provider = self.provider(order)
        return provider.plan(order, provider.endpoint())

    # -- the one path -----------------------------------------------------------------------------------------------

    def pictures(self, order: PictureOrder) -> list[JobOutcome[GenerationResult]]:
        """Every picture of ``order``, one outcome per unit (served from its receipt, or bought and collected).

        Raises :class:`RunCancelled` on Cancel, once the waits have stopped.
        """
        return self._order(order, lambda unit, provider, progress, deadline: self._picture(order, unit, provider,
                                                                                             progress, deadline))

    def submit(self, order: QingboTasks) -> list[JobOutcome[Accepted]]:
        """Buy every task of ``order`` without waiting for it; a task bought earlier with the same inputs is
        returned (``earlier``), not bought again."""
        return self._order(order, lambda unit, provider, progress, deadline: self._task(order, unit, provider,
                                                                                          progress, deadline))

    def _order(self, order: Order,
               unit_job: Callable[[Unit, Provider, BatchProgress, Deadline], T]) -> list[JobOutcome[T]]:
        # One deadline for the whole order: the balance check, the waits for a slot or another run, every unit.
        deadline = Deadline.after(float(order.timeout), self.clock)
        provider = self.provider(order)
        units = provider.plan(order, provider.endpoint())
        progress = self._progress(len(units))
        self.store.check_writable()  # no record, no payment: before any upload or request
        to_pay = sum(1 for unit in units if self.store.receipt(unit.key) is None)
        if to_pay and not self.token.cancelled():
            # The balance only advises (one that cannot be read does not stop the run): it may take a quarter of
            # the order's timeout, the rest is the pictures'.
            check = Deadline.after(min(float(order.timeout) / 4, BALANCE_SECONDS), self.clock)
            funds = provider.check_funds(order, to_pay, self._call(0, progress, order.timeout, provider,
                                                                   deadline=check))
            self.balance = funds if funds is not None else self.balance
        jobs = [(lambda unit=unit: unit_job(unit, provider, progress, deadline)) for unit in units]
        return self._run(jobs, progress)

    def _picture(self, order: PictureOrder, unit: Unit, provider: Provider, progress: BatchProgress,
                 deadline: Deadline) -> GenerationResult:
        saved = self.store.load_result(unit.key)  # the common repeat: one indexed read, no claim, no slot
        if saved is not None:
            progress.update(unit.index, 1.0, "done (receipt)")
            return saved
        call = self._call(unit.index, progress, order.timeout, provider, deadline=deadline)
        with self._slot(provider, unit.index, progress):
            outcome = self._buy(order, unit, provider, progress, call, picture=True)
            if outcome.served is not None:
                return outcome.served
            assert outcome.handle is not None
            handle = outcome.handle
            if handle.result is not None:
                result = handle.result
            else:
                if outcome.earlier:
                    progress.update(unit.index, 0.0, "collecting an earlier prediction")
                result = self._collect(provider, handle, unit.index, progress, call, seed=unit.seed,
                                       size=order.size)
                try:
                    self.store.keep_result(unit.key, result)
                except OSError as err:  # the task and its pictures are recorded by id: collectable later
                    logger.warning("could not keep a receipt: %s", err)
        progress.update(unit.index, 1.0, "done")
        return result

    def _task(self, order: QingboTasks, unit: Unit, provider: Provider, progress: BatchProgress,
              deadline: Deadline) -> Accepted:
        progress.update(unit.index, 0.0, "submitting")
        call = self._call(unit.index, progress, order.timeout, provider, deadline=deadline)
        with self._slot(provider, unit.index, progress):
            outcome = self._buy(order, unit, provider, progress, call, picture=False)
        assert outcome.handle is not None and outcome.handle.task_id is not None
        handle = outcome.handle
        task_id = str(handle.task_id)
        self._told_task_id(task_id, provider)
        progress.update(unit.index, 1.0, "accepted earlier" if outcome.earlier else "accepted")
        return Accepted(task_id, earlier=outcome.earlier, pre_consumed_cost=handle.pre_consumed)

    def _buy(self, order: Order, unit: Unit, provider: Provider, progress: BatchProgress, call: Call, *,
             picture: bool) -> _Outcome:
        """Serve what was bought under the unit's fingerprint, else wait for the run paying for it, else claim it
        and pay (or, taking over a run that died while sending, recover that request)."""
        # What is left of the order's deadline, counted in real time (the other run is another process); the
        # message names the timeout promised.
        deadline = Deadline(time.monotonic() + call.deadline.left(), time.monotonic, float(call.deadline.seconds))
        # Each unit bought claims as an owner of its own, so two units (or two threads) with one fingerprint never
        # both pay.
        owner = f"{self.owner}/{next(self._claims)}"
        while True:
            self.token.raise_if_cancelled("The run was cancelled before this unit started.")
            price = Price(provider.name, provider.model_id(order), provider.price(order))
            claimed = self.store.claim(unit.key, owner, retry_uncertain=self.retry_uncertain, price=price,
                                       budget=self.budget, day_start=day_start(time.time()))
            if claimed.kind == "over_budget" and self.budget is not None:
                raise _over_budget(self.budget, claimed.spent or 0.0, price.usd)
            if claimed.kind == "receipt" and claimed.receipt is not None:
                earlier = self._earlier(order, unit, provider, progress, call, claimed.receipt, picture=picture)
                if earlier is not None:
                    return earlier
                self.store.drop_result(unit.key)  # kept but unusable here (its files gone): decide again
                continue
            if claimed.kind == "uncertain" and claimed.previous is not None:
                raise _uncertain(claimed.previous, provider=provider.label)
            if claimed.kind == "held" and claimed.previous is not None:
                self._wait_for_holder(unit, progress, claimed.previous, deadline)
                continue
            self.keeper.hold(unit.key, owner)
            try:
                handle = self._pay(order, unit, provider, call, owner, claimed.previous)
                return _Outcome(handle=handle)
            except BaseException as err:
                self._unclaim(unit.key, owner, err)
                raise
            finally:
                self.keeper.drop(unit.key, owner)

    def _earlier(self, order: Order, unit: Unit, provider: Provider, progress: BatchProgress, call: Call,
                 receipt: Receipt, *, picture: bool) -> _Outcome | None:
        """What the unit bought in an earlier run: a kept result, a task to collect, or URLs to download again."""
        if picture:
            saved = self.store.load_result(unit.key)
            if saved is not None:
                progress.update(unit.index, 1.0, "done (receipt)")
                return _Outcome(served=saved)
        usable, _spent = self.store.task_receipt(unit.key)
        if usable is not None:
            return _Outcome(handle=provider.earlier(usable), earlier=True)
        if picture and receipt.urls is not None:
            urls = [str(url) for url in receipt.urls.get("urls") or []]
            result = provider.fetch_again(order, unit, urls, receipt.urls, call)
            self.store.keep_result(unit.key, result)
            return _Outcome(served=result)
        return None

    def _pay(self, order: Order, unit: Unit, provider: Provider, call: Call, owner: str,
             previous: Claim | None) -> Handle:
        """Send the unit's paid request (noted first: no note, no request) and record what it bought, with the
        release of its claim, in one transaction. Taking over a run that died while sending, recover instead."""
        if previous is not None:
            recovered = self._recover(order, unit, provider, call, owner, previous)
            if recovered is not None:
                return recovered
        what = provider.what(order)
        self.store.mark_sending(unit.key, owner, detail={"what": what, "provider": provider.label})
        try:
            with self._paying_for(what):
                handle = provider.submit(order, unit, call, idempotency_key=lambda: self.store.idempotency_key(
                    unit.key))
        except ResultDownloadError as err:
            # Paid, and its picture is at the provider: keep the URLs, so the next run downloads it for free.
            kept = {"urls": err.urls, "prompt_sha256": prompt_hash(order.prompt)}
            _recorded(lambda: self.store.finish(unit.key, owner, urls=kept), "The picture")
            raise
        if handle.result is not None:
            result = handle.result
            _recorded(lambda: self.store.keep_result(unit.key, result, owner=owner), "The picture")
        else:
            task_id = str(handle.task_id)
            _recorded(lambda: self.store.finish(unit.key, owner, task_id=task_id, prompt_head=order.prompt[:40]),
                      f"The task {task_id}")
        return handle

    def _recover(self, order: Order, unit: Unit, provider: Provider, call: Call, owner: str,
                 previous: Claim) -> Handle | None:
        """A request a run sent before it died: the handle it bought, or None to send it (again)."""
        since = previous.sending_at or previous.claimed_at
        recovery = provider.recover(order, since, time.time(), _StoredIds(self.store), call)
        if recovery.resend or recovery.absent or (self.retry_uncertain and not recovery.certain):
            return None
        if recovery.task_id is not None:
            task_id = recovery.task_id
            model = recovery.model or ""
            _recorded(lambda: self._adopt(unit.key, owner, task_id, model, order, provider), f"The task {task_id}")
            return provider.earlier(task_id)
        detail = {**previous.detail, "provider": provider.label}
        if recovery.candidates is not None:
            detail["candidates"] = recovery.candidates
        if recovery.reason is not None:
            detail["history"] = recovery.reason
        self.store.mark_uncertain(unit.key, owner, detail)
        raise _uncertain(Claim(previous.fingerprint, owner, "uncertain", previous.claimed_at, 0.0,
                               previous.sending_at, detail), provider=provider.label)

    def _adopt(self, key: str, owner: str, task_id: str, model: str, order: Order, provider: Provider) -> None:
        """Record a task found in the provider's history as the one this unit paid for."""
        self.store.record_submitted(task_id, provider=provider.name, model=model,
                                    prompt_sha256=prompt_hash(order.prompt), params={"recovered": True},
                                    base_url=provider.endpoint())
        self.store.finish(key, owner, task_id=task_id)

    def _wait_for_holder(self, unit: Unit, progress: BatchProgress, holder: Claim, deadline: Deadline) -> None:
        since = time.strftime("%H:%M:%S", time.localtime(holder.claimed_at))
        progress.update(unit.index, None, f"waiting for another run with the same inputs (since {since})")
        left = deadline.left()
        if left <= 0:
            raise ClaimWaitTimeoutError(
                f"Another run with the same inputs has been paying for this picture since {since} and had not "
                f"finished within the timeout ({deadline.seconds:g} s). Nothing was sent twice: queue the same "
                "inputs again once it ends to get its picture at no cost.")
        # Woken when the holder finishes (PostgreSQL notifies); at the latest, looked at again when its lease would
        # end, which is when a holder that died is taken over.
        self.store.wait(min(left, max(holder.lease_until - time.time(), HOLDER_POLL_SECONDS), MAX_HOLDER_WAIT_SECONDS),
                        self.token.event)
        if self.token.cancelled():
            raise CancelledError("The run was cancelled while another run with the same inputs was paying.")

    def _unclaim(self, key: str, owner: str, err: BaseException) -> None:
        """After a failed unit: release its claim when nothing can have been charged, else leave it to the next run
        to recover (expired at once). The paid request's state is the claim's: ``sending`` means it may have gone."""
        try:
            claim = self.store.claim_of(key)
            if claim is None or claim.owner != owner or claim.state == "uncertain":
                return  # not ours any more, or kept on purpose: the same inputs are not sent again unasked
            if claim.state == "sending" and _may_have_charged(err):
                self.store.expire(key, owner)
            else:
                self.store.release(key, owner)
        except OSError:
            pass  # the claim lapses with its lease; the next run recovers it

    # -- collecting tasks by id -------------------------------------------------------------------------------------

    def collect(self, task_ids: Sequence[str], *, provider: ProviderName = "qingbo", timeout: float = 120.0,
                extras: Sequence[dict[str, object]] | None = None) -> list[JobOutcome[GenerationResult]]:
        """Wait for existing tasks side by side (never re-submitting) and return their pictures, one per id.

        One deadline for all of them. A task collected earlier comes from its local copy without a request. On
        Cancel, the tasks not collected are cancelled at the provider while still queued, where it can cancel.
        ``extras`` give each task's ``seed`` and ``size`` for its result's record.
        """
        progress = self._progress(len(task_ids))
        source = self.providers.named(provider)
        deadline = Deadline.after(timeout, self.clock)
        collected: set[str] = set()

        def job(index: int, task_id: str) -> Callable[[], GenerationResult]:
            def run() -> GenerationResult:
                progress.update(index, 0.0, "waiting")
                extra = extras[index] if extras else {}
                seed, size = extra.get("seed"), extra.get("size")
                result = self._collect(source, source.earlier(task_id), index, progress,
                                       self._call(index, progress, timeout, source, deadline=deadline),
                                       seed=seed if isinstance(seed, int) else None,
                                       size=size if isinstance(size, tuple) else None)
                collected.add(task_id)
                progress.update(index, 1.0, "done")
                return result
            return run

        try:
            return self._run([job(i, tid) for i, tid in enumerate(task_ids)], progress)
        except RunCancelled:
            _cancel_queued(source, [tid for tid in task_ids if tid not in collected])
            raise

    def _collect(self, provider: Provider, handle: Handle, index: int, progress: BatchProgress, call: Call, *,
                 seed: int | None, size: tuple[int, int] | None) -> GenerationResult:
        task_id = str(handle.task_id)
        self._told_task_id(task_id, provider)
        try:
            result = provider.collect(handle, call, seed=seed, size=size)
        except TaskFailedError:
            self._cost(task_id, 0.0)  # a failed task is not billed (or is refunded)
            raise
        if result.cost_usd is not None:
            self._cost(task_id, result.cost_usd)  # what the provider says it cost, once known
        if self.hooks.on_collected is not None:
            self.hooks.on_collected(task_id)
        return result

    def _cost(self, task_id: str, usd: float) -> None:
        try:
            self.store.record_cost(task_id, usd)
        except OSError as err:  # the reservation stands: the day's spend errs on the safe side
            logger.warning("could not record what task %s cost: %s", task_id, err)

    def _told_task_id(self, task_id: str, provider: Provider) -> None:
        if self.hooks.on_task_id is not None:
            self.hooks.on_task_id(task_id, provider.name)

    # -- what a unit's requests share -------------------------------------------------------------------------------

    def _call(self, index: int, progress: BatchProgress, timeout: float, provider: Provider, *,
              deadline: Deadline | None = None) -> Call:
        """One deadline from now (or the run's), the unit's retry notices and progress, and the Cancel token."""
        def resume_hint(task_id: str) -> str | None:
            hint = self.hooks.resume_hint
            return hint(task_id, provider.name) if hint is not None else None

        def state(text: str) -> None:
            progress.update(index, 0.0, text)

        return Call(deadline=deadline if deadline is not None else Deadline.after(float(timeout), self.clock),
                    cancel=self.token, on_retry=self._retry_reporter(index, progress),
                    on_progress=progress.callback(index), on_state=state, sleep=self.sleep,
                    resume_hint=resume_hint)

    def _retry_reporter(self, index: int, progress: BatchProgress) -> Callable[[RetryNotice | None], None]:
        def report(notice: RetryNotice | None) -> None:
            progress.retrying(index, None if notice is None else str(notice))
            if self.hooks.on_retry is not None:
                self.hooks.on_retry(index, notice)
        return report

    # -- running --------------------------------------------------------------------------------------------------

    def _progress(self, units: int) -> BatchProgress:
        if self.progress is None or len(self.progress) != max(units, 1):
            self.progress = BatchProgress(units)
        return self.progress

    def _run(self, jobs: Sequence[Callable[[], T]], progress: BatchProgress) -> list[JobOutcome[T]]:
        def guarded(job: Callable[[], T]) -> Callable[[], T]:
            def start() -> T:
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
        if self.hooks.on_tick is not None:
            self.hooks.on_tick()

    @contextmanager
    def _slot(self, provider: Provider, index: int, progress: BatchProgress) -> Iterator[None]:
        def waiting(in_flight: int, limit: int) -> None:
            progress.update(index, None, f"waiting for a free {provider.label} slot ({in_flight} of {limit} in "
                                         "flight)")

        with self.limits.slot(provider.name, cancelled=self.token, on_wait=waiting, store=self.store,
                              keeper=self.keeper, cancel_event=self.token.event):
            yield

    def _paying_for(self, what: str) -> AbstractContextManager[object]:
        return self.hooks.paying(what) if self.hooks.paying is not None else nullcontext()


def _over_budget(budget: float, spent: float, price: float) -> BudgetExceededError:
    return BudgetExceededError(budget_message(budget, spent, price, setting=budget_setting()), budget=budget,
                               spent=spent, price=price)


def _recorded(record: Callable[[], None], what: str) -> None:
    """Record what a paid request bought (and release its claim); if the store fails now, say what was paid."""
    try:
        record()
    except OSError as err:
        raise ZImageError(f"{what} was paid, but the task store could not record it ({err}). Keep this message: "
                          "it is the only record.") from err


def _cancel_queued(provider: Provider, task_ids: Sequence[str]) -> None:
    """Best-effort remote cancel of every task that is still queued (one request each, side by side)."""
    if not task_ids:
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(4, len(task_ids)), thread_name_prefix="zimage-cancel") as pool:
        list(pool.map(provider.cancel, task_ids))


class _StoredIds(Container[str]):
    """The task ids the store knows, asked one at a time (an indexed lookup each)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and self._store.task(task_id) is not None


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
        found = (f"{provider or 'the provider'}'s history shows {candidates} predictions of this model from that "
                 "time that are not recorded here, so it cannot tell which one was this picture")
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


