"""The shared waiting loop, driven by a scripted status source and a fake clock: no real sleeps."""

from __future__ import annotations

import pytest

from zimage_api.errors import ServerError, TaskCancelledError, TaskTimeoutError
from zimage_api.polling import PollSchedule, TaskSnapshot, TaskState, UnknownStatusError, wait_for_task


class Script:
    """A task whose state is a function of the fake time; counts how often it was asked."""

    def __init__(self, clock, *, done_at: float, start_processing: float = 0.5, fail_calls: int = 0) -> None:
        self.clock, self.t0, self.done_at, self.start = clock, clock(), done_at, start_processing
        self.calls = 0
        self.fail_calls = fail_calls

    def __call__(self) -> TaskSnapshot[str]:
        self.calls += 1
        if self.fail_calls:
            self.fail_calls -= 1
            raise ServerError("boom", status=503)
        elapsed = self.clock() - self.t0
        if elapsed >= self.done_at:
            return TaskSnapshot(TaskState.COMPLETED, 1.0, "done")
        if elapsed < self.start:
            return TaskSnapshot(TaskState.QUEUED, 0.0, "queued")
        return TaskSnapshot(TaskState.PROCESSING, (elapsed - self.start) / (self.done_at - self.start), "running")


def test_completes_and_notices_quickly(clock) -> None:
    task = Script(clock, done_at=5.0)
    progress: list[tuple[float, str]] = []
    result = wait_for_task(task, task_id="t1", provider="Qingbo", sleep=clock.sleep, clock=clock,
                           on_progress=lambda f, text: progress.append((f, text)), cancel_check=lambda: False)
    lag = clock() - (task.t0 + 5.0)
    assert result.state is TaskState.COMPLETED
    assert 0 <= lag <= 0.3
    assert task.calls <= 5.0 + 1  # at most about one status request per second
    assert progress[-1][0] == 1.0 and progress[-1][1].startswith("completed")
    assert [f for f, _ in progress] == sorted(f for f, _ in progress)
    assert all(s <= 0.25 + 1e-9 for s in clock.sleeps)  # sleeps are sliced so Cancel is felt at once


def test_unknown_status_is_an_error(clock) -> None:
    with pytest.raises(UnknownStatusError, match="unknown status 'exploded' for task t9"):
        TaskState.parse("exploded", task_id="t9", provider="Qingbo")
    assert TaskState.parse("SUCCEEDED", task_id="x", provider="p") is TaskState.COMPLETED
    assert TaskState.parse("created", task_id="x", provider="p") is TaskState.QUEUED


def test_deadline_names_the_task_and_how_to_resume(clock) -> None:
    task = Script(clock, done_at=10_000.0)
    with pytest.raises(TaskTimeoutError) as info:
        wait_for_task(task, task_id="task-wave42", provider="Qingbo", timeout=120, sleep=clock.sleep, clock=clock,
                      resume_hint="paste task-wave42 into Qingbo Task Poll")
    message = str(info.value)
    assert "task-wave42" in message and "still running after 120 s" in message
    assert "paste task-wave42 into Qingbo Task Poll" in message and "not re-submitted" in message
    assert info.value.task_id == "task-wave42"
    assert 120 <= clock() - task.t0 <= 121
    assert task.calls <= 120  # adaptive: about one request a second or fewer while nothing changes


def test_transient_status_failures_do_not_end_the_wait(clock) -> None:
    task = Script(clock, done_at=3.0, fail_calls=5)
    result = wait_for_task(task, task_id="t2", provider="Qingbo", sleep=clock.sleep, clock=clock)
    assert result.state is TaskState.COMPLETED
    assert task.calls >= 6


def test_cancel_is_checked_between_slices_and_calls_on_cancel(clock) -> None:
    task = Script(clock, done_at=50.0, start_processing=40.0)
    cancel_at = clock() + 2.0
    seen: list[object] = []

    def on_cancel(last):
        seen.append(last.state if last else None)
        return True

    with pytest.raises(TaskCancelledError) as info:
        wait_for_task(task, task_id="t3", provider="Qingbo", sleep=clock.sleep, clock=clock,
                      cancel_check=lambda: clock() >= cancel_at, on_cancel=on_cancel)
    assert clock() - cancel_at <= 0.25 + 1e-9
    assert seen == [TaskState.QUEUED]
    assert info.value.remote_cancelled and "cancelled at the provider and refunded" in str(info.value)


def test_first_snapshot_is_used_without_a_request(clock) -> None:
    calls = []
    done = TaskSnapshot(TaskState.COMPLETED, 1.0, "x")
    result = wait_for_task(lambda: calls.append(1) or done, task_id="t", provider="p", sleep=clock.sleep,
                           clock=clock, first=done)
    assert result is done and calls == []


@pytest.mark.parametrize(
    ("waited", "eta", "overdue", "window", "since", "sent", "expected"),
    [
        (0.0, None, 0.0, 0.0, None, 0, 1.0),  # nothing known yet: the first look at 0.8 of the shortest plausible task
        (0.0, None, 0.0, 0.0, 0.5, 0, 0.5),  # counted from the submission when it is known
        (10.0, None, 0.0, 0.0, None, 5, 1.0),  # then about once a second
        (100.0, None, 0.0, 0.0, None, 30, 2.5),  # a share of the time waited, never slower than the slowest interval
        (1.0, None, 0.0, 0.0, 40.0, 1, 2.0),  # a task submitted 40 s ago is asked about less often from the start
        (1.0, 3.0, 0.0, 0.0, None, 1, 3.05),  # sleep until just after the predicted end
        (1.0, 30.0, 0.0, 0.0, None, 1, 10.0),  # at most the longest sleep, then look again
        (20.0, 0.0, 0.1, 0.0, None, 5, 0.25),  # the predicted end has just passed: dense again
        (20.0, 0.0, 1.5, 2.0, None, 5, 0.25),  # and dense while earlier tasks of its kind were still ending
        (20.0, 0.0, 1.5, 10.0, None, 5, 0.6),  # a wide window of earlier tasks is swept less densely
        (20.0, 0.0, 4.0, 2.0, None, 5, 0.5),  # then slowing down with how late it is
        (20.0, 0.0, 30.0, 0.0, None, 5, 1.0),  # back to the plain schedule
        (1.2, 0.5, 0.0, 0.0, 1.2, 2, 0.8),  # the budget: before a sharp prediction, the third request after 2 s
        (1.2, 0.0, 0.1, 0.0, 1.2, 2, 1.8),  # and once it has passed, not before 3 s: one a second since the submission
        (3.0, 0.0, 0.1, 0.5, 3.0, 3, 0.25),  # inside a tight window of earlier tasks, one request ahead
        (3.0, 0.0, 0.1, 4.0, 3.0, 3, 1.0),  # inside a wide one, none
        (1.2, 0.0, 0.1, 0.0, 600.0, 2, 0.25),  # a task submitted long ago has budget to spare
    ],
)
def test_schedule_table(waited, eta, overdue, window, since, sent, expected) -> None:
    assert PollSchedule().next_delay(waited, eta, overdue, window, since=since, sent=sent) == pytest.approx(expected)


@pytest.mark.parametrize(("since", "eta", "expected"), [
    (0.0, None, 1.0),  # just submitted, nothing known: not before 0.8 of the shortest plausible task
    (0.3, None, 0.7),
    (600.0, None, 0.0),  # submitted long ago: at once
    (0.0, 4.0, 4.05),  # earlier tasks of the kind say when to look first
    (30.0, 0.0, 0.0),  # and that it may well be done
])
def test_first_look(since, eta, expected) -> None:
    assert PollSchedule().first_delay(since, eta) == pytest.approx(expected)


def test_a_jumping_progress_predicts_the_end_from_its_step(clock) -> None:
    """Progress 0, then 50 at 4 s, then 100 at 8 s: the wait predicts the end from the step and is there soon."""
    t0 = clock()

    def stepped() -> TaskSnapshot[str]:
        elapsed = clock() - t0
        if elapsed >= 8.0:
            return TaskSnapshot(TaskState.COMPLETED, 1.0, "done")
        return TaskSnapshot(TaskState.PROCESSING, 0.5 if elapsed >= 4.0 else 0.0, "running")

    calls = []
    wait_for_task(lambda: calls.append(1) or stepped(), task_id="t", provider="p", sleep=clock.sleep, clock=clock)
    assert clock() - (t0 + 8.0) <= 0.3
    assert len(calls) <= 16  # nothing known of its length: it asks every 0.3 s until the step


def test_earlier_tasks_of_the_kind_stand_in_for_a_useless_progress(clock) -> None:
    """No progress at all, but such tasks took 30-31 s: a handful of requests, and the end is seen at once."""
    t0 = clock()

    def silent() -> TaskSnapshot[str]:
        if clock() - t0 >= 30.6:
            return TaskSnapshot(TaskState.COMPLETED, None, "done")
        return TaskSnapshot(TaskState.PROCESSING, None, "running")

    calls = []
    wait_for_task(lambda: calls.append(1) or silent(), task_id="t", provider="p", sleep=clock.sleep, clock=clock,
                  expected=29.0, expected_spread=2.0)
    assert clock() - (t0 + 30.6) <= 0.25
    assert len(calls) <= 15


SHAPES = ["int", "float", "percent", "stepped", "zero", "empty", "absent"]
SILENT = ("stepped", "zero", "empty", "absent")  # a progress that says nothing of when the task ends


def _poll_kind(clock, tmp_path, shape: str, length: float, count: int, *, store: bool = True, unit: str = "ms"):
    """Over HTTP to the emulator on the fake clock: ``count`` tasks of ``length`` s (give or take 5 %) of one kind,
    each submitted and
    then collected by its id, as Qingbo Task Poll does with a pasted id. For each: the times of its status requests
    after the submission, and the lag between its end and the wait's return, both on the fake clock."""
    from zimage_api.emulator import DEMO_KEY, Emulator
    from zimage_api.ledger import Ledger
    from zimage_api.providers.qingbo_tasks import QingboClient

    seen = []
    with Emulator(clock=clock, queue_seconds=0.0, process_seconds=(0.95 * length, 1.05 * length), picture_scale=1 / 16,
                  progress_style=shape, created_at_unit=unit, qingbo_keys={DEMO_KEY}) as emu:
        client = QingboClient(api_key=DEMO_KEY, base_url=emu.url, sleep=clock.sleep, now=clock,
                              ledger=Ledger(tmp_path) if store else False)
        for index in range(count):
            submitted = clock()
            task = client.submit("a kite", seed=index + 1)
            result = client.collect(task.task_id, sleep=clock.sleep, clock=clock, timeout=length * 3 + 30)
            assert result.images == emu.tasks[task.task_id].outputs
            times = [r.time - submitted for r in emu.requests_to(f"GET /v1/tasks/{task.task_id}")]
            seen.append((times, clock() - emu.tasks[task.task_id].completed_at, clock() - submitted))
            clock.advance(1.0)
    return seen


@pytest.mark.parametrize("shape", SHAPES)
def test_a_short_task_is_not_asked_about_at_once_and_seen_soon(shape, clock, tmp_path) -> None:
    """Three 2 s tasks of one kind: the first knows nothing of its length, the next ones know how long it took.
    No look before about 1 s, at most one request a second over the wait, and the end seen within 0.3 s when the
    progress moves, or with history; within 1 s when nothing at all is known."""
    seen = _poll_kind(clock, tmp_path, shape, 2.0, 3)
    (first, first_lag, _), *known = seen
    # Not 0.3 s after the submission (the store counts the age on the wall clock: a few milliseconds pass here).
    assert first[0] >= 0.9, first
    assert len(first) <= 3 and len(first) - 1 <= first[-1], first  # after the first look, one a second at most
    assert 0 <= first_lag <= (1.0 if shape in SILENT else 0.3), (first, first_lag)
    for times, lag, _ in known:
        assert len(times) <= 2, times  # looked when such a task ends
        assert 0 <= lag <= 0.3, (times, lag)
    assert sum(len(times) for times, _, _ in seen) / sum(waited for _, _, waited in seen) <= 1.0


@pytest.mark.parametrize("shape", SHAPES)
def test_every_progress_shape_at_most_one_request_a_second(shape, clock, tmp_path) -> None:
    """Tasks of 1.2, 3 and 12 s, two of each kind: over all of them, at most one request a second of waiting; the
    end seen within 0.3 s (median) when the progress moves, within 0.6 s when it says nothing."""
    requests, waited, lags = 0, 0.0, []
    for length in (1.2, 3.0, 12.0):
        for times, lag, wait in _poll_kind(clock, tmp_path / f"{length:g}", shape, length, 2):
            requests, waited = requests + len(times), waited + wait
            lags.append(lag)
    lags.sort()
    assert requests / waited <= 1.0, (requests, waited)
    assert (lags[2] + lags[3]) / 2 <= (0.6 if shape in SILENT else 0.3), lags


@pytest.mark.parametrize("shape", ["int", "absent"])
def test_a_model_whose_tasks_vary_widely_is_still_asked_about_once_a_second(shape, clock, tmp_path) -> None:
    """One model whose tasks take anything from 1.2 to 6 s: what the earlier ones took never brings the first look
    before the shortest of them, and over eight tasks, at most one request a second."""
    from zimage_api.emulator import DEMO_KEY, Emulator
    from zimage_api.ledger import Ledger
    from zimage_api.providers.qingbo_tasks import QingboClient

    requests, waited, lags = 0, 0.0, []
    with Emulator(clock=clock, queue_seconds=0.0, process_seconds=(1.2, 6.0), picture_scale=1 / 16,
                  progress_style=shape, qingbo_keys={DEMO_KEY}) as emu:
        client = QingboClient(api_key=DEMO_KEY, base_url=emu.url, sleep=clock.sleep, now=clock,
                              ledger=Ledger(tmp_path))
        for index in range(8):
            submitted = clock()
            task = client.submit("a kite", seed=index + 1)
            client.collect(task.task_id, sleep=clock.sleep, clock=clock, timeout=60)
            times = [r.time - submitted for r in emu.requests_to(f"GET /v1/tasks/{task.task_id}")]
            took = [emu.tasks[t].completed_at - emu.tasks[t].created_at for t in emu.tasks if t != task.task_id]
            assert times[0] >= min(took or [1.25]) * 0.75 - 0.05, (index, times, took)
            requests, waited = requests + len(times), waited + clock() - submitted
            lags.append(clock() - emu.tasks[task.task_id].completed_at)
            clock.advance(1.0)
    lags.sort()
    assert requests / waited <= 1.0, (requests, waited)
    assert (lags[3] + lags[4]) / 2 <= (0.3 if shape == "int" else 0.6), lags


def test_a_pasted_id_submitted_long_ago_is_not_asked_about_fast(clock, tmp_path) -> None:
    """The store says the task was submitted 150 s ago (it takes 200 s): the first look is at once, and the next ones
    come at the pace of a long wait, not every second."""
    import time as wall

    from zimage_api.emulator import DEMO_KEY, Emulator
    from zimage_api.ledger import Ledger
    from zimage_api.providers.qingbo_tasks import QingboClient

    with Emulator(clock=clock, queue_seconds=0.0, process_seconds=200.0, picture_scale=1 / 16,
                  progress_style="absent", qingbo_keys={DEMO_KEY}) as emu:
        store = Ledger(tmp_path)
        submitter = QingboClient(api_key=DEMO_KEY, base_url=emu.url, sleep=clock.sleep, now=clock, ledger=store)
        task = submitter.submit("a kite", seed=1)
        store.append(task.task_id, event="submitted", submitted_at=round(wall.time() - 150.0, 3))
        clock.advance(150.0)
        started = clock()
        poller = QingboClient(api_key=DEMO_KEY, base_url=emu.url, sleep=clock.sleep, now=clock, ledger=store)
        poller.collect(task.task_id, sleep=clock.sleep, clock=clock, timeout=120)
        times = [r.time - started for r in emu.requests_to(f"GET /v1/tasks/{task.task_id}")]
        lag = clock() - emu.tasks[task.task_id].completed_at
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == 0.0  # it may be done already: looked at once
    assert min(gaps) >= 2.5 - 1e-6, gaps  # a share of 150 s and more, at most 2.5 s apart
    assert len(times) <= 50 / 2.5 + 2 and 0 <= lag <= 2.5


@pytest.mark.parametrize("unit", ["s", "ms"])
def test_created_at_tells_the_age_of_a_task_the_store_does_not_know(unit, clock) -> None:
    """No store: the age of the task comes from Qingbo's ``created_at`` (seconds or milliseconds) in the first
    answer. A task created 150 s ago is then asked about every 2.5 s, not every second."""
    from zimage_api.emulator import DEMO_KEY, Emulator
    from zimage_api.providers.qingbo_tasks import QingboClient

    with Emulator(clock=clock, queue_seconds=0.0, process_seconds=200.0, picture_scale=1 / 16,
                  progress_style="zero", created_at_unit=unit, qingbo_keys={DEMO_KEY}) as emu:
        client = QingboClient(api_key=DEMO_KEY, base_url=emu.url, sleep=clock.sleep, now=clock, ledger=False)
        task = client.submit("a kite", seed=1)
        clock.advance(150.0)
        started = clock()
        client.collect(task.task_id, sleep=clock.sleep, clock=clock, timeout=120)
        times = [r.time - started for r in emu.requests_to(f"GET /v1/tasks/{task.task_id}")]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == 0.0 and min(gaps) >= 2.5 - 1e-6, gaps
    assert len(times) <= 50 / 2.5 + 2


@pytest.mark.parametrize("unit", ["s", "ms"])
def test_created_at_of_a_fresh_task_spares_the_fast_opening(unit, clock) -> None:
    """No store, a 3 s task with a moving progress: one look at once tells its age (``created_at``), one more when it
    should be near its end, and the end is seen soon."""
    from zimage_api.emulator import DEMO_KEY, Emulator
    from zimage_api.providers.qingbo_tasks import QingboClient

    with Emulator(clock=clock, queue_seconds=0.0, process_seconds=3.0, picture_scale=1 / 16,
                  progress_style="int", created_at_unit=unit, qingbo_keys={DEMO_KEY}) as emu:
        client = QingboClient(api_key=DEMO_KEY, base_url=emu.url, sleep=clock.sleep, now=clock, ledger=False)
        task = client.submit("a kite", seed=1)
        submitted = clock()
        client.collect(task.task_id, sleep=clock.sleep, clock=clock, timeout=60)
        times = [r.time - submitted for r in emu.requests_to(f"GET /v1/tasks/{task.task_id}")]
        lag = clock() - emu.tasks[task.task_id].completed_at
    assert times[0] == 0.0 and times[1] >= 1.0 - 1e-6, times  # then not before 1 s after the submission
    assert len(times) <= 4 and 0 <= lag <= 0.3, (times, lag)


def test_a_step_seen_late_does_not_push_the_end_past_what_earlier_tasks_said(clock) -> None:
    """Earlier tasks took 10 s; this one jumps to 50 at 6 s (seen only at 10 s, after a long sleep) and ends at 12 s.
    The late step would predict 20 s; the wait keeps looking from the earlier tasks' end instead."""
    t0 = clock()

    def stepped() -> TaskSnapshot[str]:
        elapsed = clock() - t0
        if elapsed >= 12.0:
            return TaskSnapshot(TaskState.COMPLETED, 1.0, "done")
        return TaskSnapshot(TaskState.PROCESSING, 0.5 if elapsed >= 6.0 else 0.0, "running")

    calls = []
    wait_for_task(lambda: calls.append(1) or stepped(), task_id="t", provider="p", sleep=clock.sleep, clock=clock,
                  expected=10.0, expected_spread=0.2)
    assert clock() - (t0 + 12.0) <= 0.5
    assert len(calls) <= 15
