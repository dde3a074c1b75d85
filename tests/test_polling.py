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
    ("waited", "eta", "overdue", "window", "expected"),
    [
        (0.0, None, 0.0, 0.0, 0.3),  # nothing known yet: the fastest interval
        (10.0, None, 0.0, 0.0, 0.7),  # a share of the time waited so far
        (100.0, None, 0.0, 0.0, 2.5),  # but never slower than the slowest interval
        (1.0, 3.0, 0.0, 0.0, 3.05),  # sleep until just after the predicted end
        (1.0, 30.0, 0.0, 0.0, 10.0),  # at most the longest sleep, then look again
        (20.0, 0.0, 0.1, 0.0, 0.2),  # the predicted end has just passed: dense again
        (20.0, 0.0, 1.5, 2.0, 0.2),  # and dense while earlier tasks of its kind were still ending
        (20.0, 0.0, 4.0, 2.0, 0.5),  # then slowing down with how late it is
        (20.0, 0.0, 30.0, 0.0, 1.4),  # back to the plain schedule
    ],
)
def test_schedule_table(waited, eta, overdue, window, expected) -> None:
    assert PollSchedule().next_delay(waited, eta, overdue, window) == pytest.approx(expected)


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


@pytest.mark.parametrize("shape", ["int", "float", "percent", "stepped", "zero", "empty", "absent"])
def test_every_progress_shape_is_noticed_soon_at_about_a_request_a_second(shape, clock, tmp_path) -> None:
    """Over HTTP to the emulator (fake clock): two 12 s tasks of one kind, for each way servers report progress.
    The first knows nothing of its length; the second also knows how long the first took."""
    from zimage_api.emulator import DEMO_KEY, Emulator
    from zimage_api.ledger import Ledger
    from zimage_api.qingbo import QingboClient

    with Emulator(clock=clock, queue_seconds=0.0, process_seconds=12.0, picture_scale=1 / 16, progress_style=shape,
                  qingbo_keys={DEMO_KEY}) as emu:
        client = QingboClient(api_key=DEMO_KEY, base_url=emu.url, sleep=clock.sleep, now=clock,
                              ledger=Ledger(tmp_path))
        for attempt in range(2):
            task = client.submit("a kite", seed=1)
            before = len(emu.requests_to("GET /v1/tasks/*"))
            started = clock()
            result = client.collect(task.task_id, first=task, sleep=clock.sleep, clock=clock, timeout=60)
            assert result.images == emu.tasks[task.task_id].outputs
            lag = clock() - emu.tasks[task.task_id].completed_at
            requests = len(emu.requests_to("GET /v1/tasks/*")) - before
            blind = attempt == 0 and shape in ("zero", "empty", "absent")
            # Knowing nothing of the length, a progress that says nothing costs lag (a share of the wait) and
            # requests (every 0.3 s at first; a stepped one until its first step); once a task of the kind was
            # seen, both targets hold.
            assert 0 <= lag <= (PollSchedule().plain(12.0) if blind else 0.3), (shape, lag)
            rate = 2.5 if blind or (attempt == 0 and shape == "stepped") else 1.0
            assert requests / (clock() - started) <= rate, (shape, requests)
        assert requests <= 8, (shape, requests)  # with a length known from the first task: a few requests


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
