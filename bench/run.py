"""Benchmark of the pack against its floor (plain library code) and its peers (fixed 5 s polling, one at a time).

    python bench/run.py            # the full run, about 7 minutes on 2 cores (the polling section takes 3)
    python bench/run.py --quick    # a smoke run of every section (figures not meaningful)
    python bench/run.py --only decode,lag

Everything runs here against the local emulator on 127.0.0.1 in real time; nothing leaves the machine and the user's
data folder is never touched (the store section works in a temporary folder). Each ratio is measured side by side
in the same run: pack and floor alternate in every repetition and the table shows the medians. Sections:

1. decode   provider pictures (b64 PNG, b64 JPEG, downloaded JPEG; 1024^2 and 2048^2) to an IMAGE tensor
2. upload   an IMAGE tensor 2048^2 to a <=1024 px PNG for upload
3. lag      per shape of the progress field, tasks of 1.2 to 6 s and of 1 to 60 s, polled by id as Qingbo Task Poll
            does: time from completion to return, status requests per second of waiting, first of a kind and with
            history
4. many     16 pictures of L = 2 s each: the pack's pool against a sequential loop; then a pool bound of 2
5. import   the pack's __init__ import time beyond torch, in fresh processes
6. memory   peak resident memory while decoding 4 pictures of 2048^2, against the tensor's size
7. nodes    independent Generate nodes awaited side by side as ComfyUI's executor does; the per-provider limit;
            an API node beside a slow local node
8. store    the task store at 100,000 tasks: the import of a 0.1.0 ledger, lookups by id and by fingerprint, the
            claim of a paid unit with and without its price reserved against the daily budget, the panel's
            /zimage/spend and /zimage/tasks answers, a re-queued Submit -> Poll (served from local copies) against an
            empty store, and the engine serving a unit from its receipt, against an empty store and against the
            previous release (797e917, unpacked from the repository's history)
9. bounds   hostile servers: a picture body that never ends (time and memory until the size cap), a body
            trickling at 2 B/s (time until the deadline), a download that never answers (time against the read
            timeout)
10. farm    the shared store in PostgreSQL beside SQLite, in the same run, at 100,000 tasks: what a paid unit writes
            (claim -> record_submitted -> finish), a receipt hit (claim + load_result), lookups (task by id, receipt
            by fingerprint, claim of an unknown fingerprint), and 4 processes x 8 units of L = 1 s under a provider
            limit of 2 held through one store (wall against the ideal 16 s, peak in flight). Needs --postgres URL
            (default $ZIMAGE_TEST_POSTGRES_URL; skipped without one); it works in a fresh schema and drops it; ~50 s.

The exit status is 0 when every section ran, even when a target is missed (this is a report); 1 when a section
crashed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import gc
import io
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402
from content import encoded, photo  # noqa: E402
from PIL import Image  # noqa: E402

from zimage_api import images as zimages  # noqa: E402
from zimage_api.emulator import DEMO_KEY, Emulator  # noqa: E402
from zimage_api.ledger import Ledger  # noqa: E402
from zimage_api.parallel import run_jobs  # noqa: E402
from zimage_api.providers.openai_images import ImagesClient  # noqa: E402
from zimage_api.providers.qingbo_tasks import QingboClient  # noqa: E402
from zimage_api.providers.wavespeed_v3 import WaveSpeedClient  # noqa: E402
from zimage_api.store.postgres import with_schema  # noqa: E402

PREVIOUS_RELEASE = "797e917"  # the commit of the previous release, measured beside this one in the store section
SECTIONS = ("decode", "upload", "lag", "many", "import", "memory", "nodes", "store", "bounds", "farm")


@dataclass
class Settings:
    """How much of each section runs; ``--quick`` shrinks every figure to a smoke test."""

    quick: bool
    decode_sizes: tuple[int, ...] = (1024, 2048)
    decode_reps: int = 15
    upload_reps: int = 9
    lag_short_lengths: tuple[float, ...] = (1.2, 2, 3, 4.5, 6)
    lag_lengths: tuple[float, ...] = (1, 2, 3, 5, 8, 13, 20, 30, 45, 60)
    lag_per_kind: int = 3
    lag_mixed: tuple[float, float] = (1.2, 6.0)  # one model whose tasks take anything in this range
    lag_mixed_count: int = 8  # tasks one after another, in each of ``lag_mixed_kinds`` stores at once
    lag_mixed_kinds: int = 3
    many_count: int = 16
    many_latency: float = 2.0
    many_reps: int = 3
    sequential_reps: int = 1
    bounded_limit: int = 2
    import_runs: int = 7
    nodes_latency: float = 2.0
    store_tasks: int = 100_000
    store_lookups: int = 300
    store_reps: int = 21
    engine_turns: int = 2
    bounds_deadline: float = 10.0
    bounds_read_timeout: float = 5.0
    farm_samples: int = 200  # paid units and receipt hits timed on each store
    farm_processes: int = 4
    farm_units: int = 8  # per process, side by side
    farm_latency: float = 1.0
    farm_limit: int = 2
    farm_head_start: float = 3.0  # seconds for the processes to start before their units begin together

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if not quick:
            return cls(quick=False)
        return cls(quick=True, decode_reps=2, upload_reps=2, lag_short_lengths=(1.2, 3), lag_lengths=(1, 4),
                   lag_per_kind=2, lag_mixed_count=3, lag_mixed_kinds=1,
                   many_latency=0.5, many_reps=1, import_runs=2, nodes_latency=0.5, store_tasks=10_000,
                   store_lookups=50, store_reps=5, engine_turns=1, bounds_deadline=2.0, bounds_read_timeout=1.0,
                   farm_samples=30, farm_latency=0.25)


@dataclass
class Row:
    """One line of the final table."""

    metric: str
    pack: str
    other: str
    ratio: float | None
    target: str
    met: bool | None


# -- helpers -----------------------------------------------------------------------------------------------------------


def _run_threads(threads: list[threading.Thread], errors: list[BaseException], what: str,
                 timeout: float = 120.0) -> None:
    """Start the threads together, wait for them (at most ``timeout`` seconds in all), and raise if any failed."""
    for thread in threads:
        thread.start()
    ends = time.monotonic() + timeout
    for thread in threads:
        thread.join(timeout=max(ends - time.monotonic(), 0.0))
    if any(thread.is_alive() for thread in threads):
        errors.append(TimeoutError(f"{sum(t.is_alive() for t in threads)} {what} still running after {timeout:g} s"))
    if errors:
        raise RuntimeError(f"{len(errors)} {what} failed") from errors[0]


def say(text: str = "") -> None:
    print(text, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def side_by_side(pack: Callable[[], Any], floor: Callable[[], Any], reps: int) -> tuple[list[float], list[float]]:
    """Time ``pack`` and ``floor`` alternately (ABBA order, one warm-up each); lists of seconds."""
    pack()
    floor()
    pack_times: list[float] = []
    floor_times: list[float] = []
    for rep in range(reps):
        order = [(pack, pack_times), (floor, floor_times)]
        if rep % 2:
            order.reverse()
        for fn, times in order:
            gc.collect()
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return pack_times, floor_times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return [
        f"CPU      {cpu}",
        f"cores    {os.cpu_count()} (usable {usable}); torch threads {torch.get_num_threads()}",
        f"OS       {platform.system()} {platform.release()}",
        f"Python   {platform.python_version()} ({platform.python_implementation()})",
        f"torch    {torch.__version__}   numpy {np.__version__}   Pillow {PIL.__version__}   "
        f"requests {requests.__version__}",
        f"load     {load_average()} (1/5/15 min averages at the start: other work on the machine adds noise)",
    ]


# -- 1. decode ---------------------------------------------------------------------------------------------------------


def floor_decode(data: bytes) -> torch.Tensor:
    """The plain way: PIL opens, numpy views the pixels, one division to float32, torch shares the memory."""
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    return torch.from_numpy(pixels / np.float32(255))[None]


def floor_b64(text: str) -> torch.Tensor:
    return floor_decode(base64.b64decode(text))


def pack_b64(text: str) -> torch.Tensor:
    return zimages.bytes_to_tensor([zimages.decode_base64(text)])[0]


def bench_decode(cfg: Settings, emu: Emulator) -> list[Row]:
    rows: list[Row] = []
    client = WaveSpeedClient(api_key=DEMO_KEY, base_url=emu.url, ledger=False)
    for size in cfg.decode_sizes:
        picture = photo(size)
        png, jpeg = encoded(picture, "png"), encoded(picture, "jpeg")
        del picture
        b64_png, b64_jpeg = base64.b64encode(png).decode("ascii"), base64.b64encode(jpeg).decode("ascii")
        url = client.upload(jpeg, "photo.jpg", "image/jpeg")  # served back by the emulator's /files route
        say(f"  {size}x{size}: PNG {len(png) / 1e6:.2f} MB, JPEG {len(jpeg) / 1e6:.2f} MB")

        def plain_get(url: str = url) -> bytes:
            response = requests.get(url, timeout=60)  # a fresh session (and connection) per call
            response.raise_for_status()
            return response.content

        def pack_download(url: str = url) -> torch.Tensor:
            return zimages.bytes_to_tensor([client.transport.download(url)])[0]

        def floor_download() -> torch.Tensor:
            return floor_decode(plain_get())

        cases: list[tuple[str, Callable[[], torch.Tensor], Callable[[], torch.Tensor]]] = [
            ("b64 PNG", functools.partial(pack_b64, b64_png), functools.partial(floor_b64, b64_png)),
            ("b64 JPEG", functools.partial(pack_b64, b64_jpeg), functools.partial(floor_b64, b64_jpeg)),
            ("download JPEG", pack_download, floor_download),
        ]
        for name, pack, floor in cases:
            same = torch.equal(pack(), floor())
            pack_times, floor_times = side_by_side(pack, floor, cfg.decode_reps)
            p, f = median(pack_times), median(floor_times)
            ratio = p / f
            say(f"  {name:14s} {size}^2  pack {ms(p):>9s}  floor {ms(f):>9s}  ratio {ratio:.2f}"
                f"  (pack min {ms(min(pack_times))}, floor min {ms(min(floor_times))})"
                + ("" if same else "  ** tensors differ **"))
            rows.append(Row(f"Decode {name} {size}²", ms(p), ms(f), ratio, "≤ 1.10×", ratio <= 1.10))
    client.transport.close()
    return rows


# -- 2. upload ---------------------------------------------------------------------------------------------------------


def floor_upload(image: torch.Tensor, max_side: int = 1024) -> bytes:
    """The plain way: float to 8-bit with rounding, PIL Lanczos to the long side, PNG at zlib level 1."""
    pixels = (image[0] * 255).clamp_(0, 255).round_().to(torch.uint8).numpy()
    picture = Image.fromarray(pixels)
    width, height = picture.size
    scale = max_side / max(width, height)
    if scale < 1:
        picture = picture.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                 Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def bench_upload(cfg: Settings) -> list[Row]:
    image = floor_decode(encoded(photo(2048), "png"))
    pack = lambda: zimages.tensor_to_upload(image)[0]  # noqa: E731
    floor = lambda: floor_upload(image)  # noqa: E731
    same = pack() == floor()
    pack_times, floor_times = side_by_side(pack, floor, cfg.upload_reps)
    p, f = median(pack_times), median(floor_times)
    say(f"  2048^2 -> 1024^2 PNG  pack {ms(p)}  floor {ms(f)}  ratio {p / f:.2f}  (pack min {ms(min(pack_times))}, "
        f"floor min {ms(min(floor_times))}; {'same bytes' if same else '** different bytes **'}, "
        f"{len(pack()) / 1e6:.2f} MB)")
    return [Row("Upload prep 2048² → 1024² PNG", ms(p), ms(f), p / f, "≤ 1.10×", p / f <= 1.10)]


# -- 3. lag after done -------------------------------------------------------------------------------------------------

LAG_SHAPES = ("int", "float", "percent", "stepped", "zero", "empty", "absent")
SILENT_SHAPES = ("stepped", "zero", "empty", "absent")  # a progress that says nothing of the end (0, 50, 100 included)


@dataclass
class TaskTiming:
    task_id: str
    submitted: float
    returned: float
    first_of_kind: bool


def _kind_thread(shape: str, span: tuple[float, float], per_kind: int, out: list[tuple[Emulator, TaskTiming]],
                 errors: list[BaseException], folder: Path) -> threading.Thread:
    """One kind of task (one server, one model whose tasks take anything in ``span`` seconds): ``per_kind`` tasks
    one after another, each submitted and then collected by its id as Qingbo Task Poll does with a pasted id (the
    store knows when it was submitted), with the default schedule and the kind's own task store, so that later ones
    know how long the earlier ones took."""

    def one() -> None:
        try:
            # Tiny result pictures: the emulator renders one when a task is first seen completed, and that CPU time
            # is the emulator's, not the client's.
            emu = Emulator(queue_seconds=0.0, process_seconds=span, picture_scale=1 / 16,
                           progress_style=shape, wavespeed_keys={DEMO_KEY}, qingbo_keys={DEMO_KEY}).start()
            client = QingboClient(api_key=DEMO_KEY, base_url=emu.url, ledger=Ledger(folder))
            try:
                for index in range(per_kind):
                    submitted = time.time()
                    task = client.submit(f"bench lag {shape} {span} {index}", seed=index + 1)
                    client.collect(task.task_id, timeout=span[1] * 3 + 30)
                    out.append((emu, TaskTiming(task.task_id, submitted, time.time(), index == 0)))
            finally:
                client.transport.close()
        except BaseException as err:  # noqa: BLE001 - reported after the run
            errors.append(err)

    return threading.Thread(target=one, name=f"lag-{shape}-{span[0]:g}-{span[1]:g}")


def _lag_stats(timings: list[tuple[Emulator, TaskTiming]]) -> dict[str, Any]:
    lags, requests, waits = [], 0, 0.0
    for emu, t in timings:
        completed = emu.tasks[t.task_id].completed_at
        if completed is None:
            raise RuntimeError(f"task {t.task_id} returned before the emulator finished it")
        lags.append(t.returned - completed)
        requests += len(emu.requests_to(f"GET /v1/tasks/{t.task_id}"))
        waits += t.returned - t.submitted
    return {"lags": lags, "rate": requests / max(waits, 1e-9), "tasks": len(timings)}


def _lag_figures(stats: dict[str, Any]) -> str:
    return (f"{stats['rate']:.2f} /s, lag median {median(stats['lags']):.3f} s, "
            f"p90 {quantile(stats['lags'], 0.9):.3f} s")


def bench_lag(cfg: Settings) -> list[Row]:
    """Every progress shape: tasks of 1.2 to 6 s and of 1 to 60 s (one length per kind, give or take 5 %), and one
    model whose tasks take anything from 1.2 to 6 s; all at once in real time against their own emulators."""
    def spans(lengths: tuple[float, ...]) -> list[tuple[float, float]]:
        return [(0.95 * length, 1.05 * length) for length in lengths]

    mixed = f"one model, {cfg.lag_mixed[0]:g}-{cfg.lag_mixed[1]:g} s each"
    ranges = {"1.2-6 s": (spans(cfg.lag_short_lengths), cfg.lag_per_kind),
              "1-60 s": (spans(cfg.lag_lengths), cfg.lag_per_kind),
              mixed: ([cfg.lag_mixed] * cfg.lag_mixed_kinds, cfg.lag_mixed_count)}
    timings: dict[tuple[str, str], list[tuple[Emulator, TaskTiming]]] = {
        (name, shape): [] for name in ranges for shape in LAG_SHAPES}
    errors: list[BaseException] = []
    longest = max(span[1] * count for kinds, count in ranges.values() for span in kinds)
    with tempfile.TemporaryDirectory() as tmp:
        threads = [_kind_thread(shape, span, count, timings[name, shape], errors,
                                Path(tmp) / f"{number}-{shape}-{index}")
                   for number, (name, (kinds, count)) in enumerate(ranges.items()) for shape in LAG_SHAPES
                   for index, span in enumerate(kinds)]
        say(f"  tasks of 1.2-6 s and of 1-60 s: lengths {', '.join(f'{v:g}' for v in cfg.lag_short_lengths)} s and "
            f"{', '.join(f'{v:g}' for v in cfg.lag_lengths)} s (give or take 5 %), {cfg.lag_per_kind} tasks of each "
            "length one after another (the first knows nothing of its length)")
        say(f"  {mixed}: {cfg.lag_mixed_count} tasks one after another, in {cfg.lag_mixed_kinds} stores at once")
        say(f"  {len(threads)} kinds of task ({len(LAG_SHAPES)} progress shapes) at once; each task submitted, then "
            "collected by its id")
        _run_threads(threads, errors, "lag task(s)", timeout=longest + 10 * max(cfg.lag_mixed_count,
                                                                                cfg.lag_per_kind) + 60)
        for emu in {id(e): e for items in timings.values() for e, _ in items}.values():
            emu.stop()
    rows = []
    for name in ranges:
        say(f"  tasks of {name}   all: requests/s, lag median, p90 | first of a kind | with history")
        for shape in LAG_SHAPES:
            items = timings[name, shape]
            every = _lag_stats(items)
            first = _lag_stats([item for item in items if item[1].first_of_kind])
            known = _lag_stats([item for item in items if not item[1].first_of_kind])
            say(f"    {shape:8} {_lag_figures(every)} | {_lag_figures(first)} | {_lag_figures(known)}")
            lag, p90 = median(every["lags"]), quantile(every["lags"], 0.9)
            goal = 0.6 if shape in SILENT_SHAPES else 0.3
            rows.append(Row(f"Poll {name}, progress '{shape}': lag median · p90", f"{lag:.3f} s · {p90:.3f} s",
                            f"{every['rate']:.2f} requests/s", None, f"≤ {goal} s, ≤ 1.0 /s",
                            lag <= goal and every["rate"] <= 1.0))
    return rows


# -- 4. many images ----------------------------------------------------------------------------------------------------


class InFlight:
    """Counts the jobs running at once, client side."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def wrap(self, job: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            try:
                return job()
            finally:
                with self.lock:
                    self.now -= 1
        return run


def _pictures(outcomes: list[Any]) -> torch.Tensor:
    failed = [o for o in outcomes if not o.finished or o.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} job(s) failed") from failed[0].error
    return zimages.bytes_to_tensor([p for o in outcomes for p in o.value.images])[0]


def bench_many(cfg: Settings) -> list[Row]:
    count, latency = cfg.many_count, cfg.many_latency
    rows: list[Row] = []
    # OpenAI-style synchronous generations: every request is answered after exactly L seconds. Pictures are 256^2
    # so that the emulator's own rendering does not count; decoding is measured in section 1.
    emu = Emulator(sync_latency=latency).start()
    try:
        client = ImagesClient(api_key=DEMO_KEY, base_url=emu.url)
        image_jobs = [functools.partial(client.generate, f"bench many {i}", width=256, height=256, seed=i)
                      for i in range(count)]

        def pack() -> torch.Tensor:
            return _pictures(run_jobs(image_jobs, cancel=threading.Event(), workers=count))

        def sequential() -> torch.Tensor:
            return zimages.bytes_to_tensor([p for job in image_jobs for p in job().images])[0]

        pack_times = []
        for _ in range(cfg.many_reps):
            started = time.perf_counter()
            pack()
            pack_times.append(time.perf_counter() - started)
        seq_times = []
        for _ in range(cfg.sequential_reps):
            started = time.perf_counter()
            sequential()
            seq_times.append(time.perf_counter() - started)
        p, s = median(pack_times), median(seq_times)
        say(f"  images API, {count} x L={latency:g} s: pool of {count} {p:.2f} s (runs "
            f"{', '.join(f'{t:.2f}' for t in pack_times)}), sequential {s:.2f} s; pool = {p / latency:.2f} L; "
            f"emulator peak {emu.peak_concurrency} at once")
        rows.append(Row(f"{count} images, L={latency:g} s, images API: wall", f"{p:.2f} s",
                        f"{s:.2f} s (sequential)", p / s, f"≤ {1.3 * latency:.2f} s (1.3·L)", p <= 1.3 * latency))
        client.transport.close()
    finally:
        emu.stop()

    # Qingbo tasks of exactly L seconds (no queue): submit, poll, download, on the same pool.
    emu = Emulator(queue_seconds=0.0, process_seconds=latency, picture_scale=1 / 8).start()
    try:
        qingbo = QingboClient(api_key=DEMO_KEY, base_url=emu.url, ledger=False)
        def task_job(i: int, client: QingboClient = qingbo) -> Any:
            task = client.submit(f"bench many {i}", seed=i, prefer_wait=10)
            return client.collect(task.task_id, first=task)

        task_jobs = [functools.partial(task_job, i) for i in range(count)]
        task_times = []
        for _ in range(cfg.many_reps):
            started = time.perf_counter()
            _pictures(run_jobs(task_jobs, cancel=threading.Event(), workers=count))
            task_times.append(time.perf_counter() - started)
        t = median(task_times)
        say(f"  Qingbo tasks, {count} x L={latency:g} s: pool of {count} {t:.2f} s = {t / latency:.2f} L "
            f"(sequential would be at least {count * latency:.0f} s)")
        rows.append(Row(f"{count} images, L={latency:g} s, Qingbo tasks: wall", f"{t:.2f} s",
                        f"≥ {count * latency:.0f} s (sequential)", t / (count * latency),
                        f"≤ {1.3 * latency:.2f} s (1.3·L)", t <= 1.3 * latency))
        qingbo.transport.close()
    finally:
        emu.stop()

    # The default WaveSpeed tier: 2 requests at once. The pool of 2 must never send a third (no 429 answers).
    limit = cfg.bounded_limit
    emu = Emulator(sync_latency=latency, max_concurrent=limit).start()
    try:
        client = ImagesClient(api_key=DEMO_KEY, base_url=emu.url)
        in_flight = InFlight()
        bound_jobs = [in_flight.wrap(functools.partial(client.generate, f"bench bound {i}", width=256, height=256,
                                                       seed=i)) for i in range(count)]
        started = time.perf_counter()
        _pictures(run_jobs(bound_jobs, cancel=threading.Event(), workers=limit))
        wall = time.perf_counter() - started
        refused = sum(1 for r in emu.requests_to("POST /v1/images/generations") if r.status == 429)
        peak = emu.peak_concurrency
        ideal = -(-count // limit) * latency
        ok = peak <= limit and in_flight.peak <= limit and refused == 0
        say(f"  limit {limit}, pool of {limit}: {wall:.2f} s (ideal {ideal:.0f} s); emulator peak {peak}, client peak "
            f"{in_flight.peak}, 429 answers {refused}")
        rows.append(Row(f"{count} images, emulator limit {limit}, pool {limit}: wall", f"{wall:.2f} s",
                        f"{ideal:.0f} s (ideal)", wall / ideal, f"peak ≤ {limit}, no 429 (peak {peak})", ok))
        client.transport.close()
    finally:
        emu.stop()
    return rows


# -- 5. import cost ----------------------------------------------------------------------------------------------------


def _probe(*args: str, timeout: float = 120) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(BENCH / "probe.py"), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise RuntimeError(f"probe {args[0]} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _import_costs() -> list[tuple[int, int, str]]:
    """(self us, cumulative us, module) of the modules the pack's import adds after torch, from -X importtime."""
    code = ("import torch, importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('comfyui-zimage', {str(ROOT / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(ROOT)!r}])\n"
            "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)\n")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tempfile.gettempdir())
    entries: list[tuple[int, int, str]] = []
    after_torch = False
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line.split("|")
        name = parts[2].rstrip()
        top_level = len(name) - len(name.lstrip()) <= 1
        if not after_torch:
            after_torch = top_level and name.strip() == "torch"
            continue
        entries.append((int(parts[0].split(":")[1]), int(parts[1]), name.strip()))
    return entries


def bench_import(cfg: Settings) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="zimage-bench-pycache-") as pycache:
        _probe("import", str(ROOT), pycache)  # writes the bytecode cache; not counted
        for label, extra in (("no bytecode cache", ()), ("bytecode cached", (pycache,))):
            results = [_probe("import", str(ROOT), *extra) for _ in range(cfg.import_runs)]
            pack = median([r["pack_ms"] for r in results])
            torch_s = median([r["torch_s"] for r in results])
            each = ", ".join(f"{r['pack_ms']:.1f}" for r in results)
            say(f"  {label}: {cfg.import_runs} fresh processes, pack {each} ms (median {pack:.1f}); import torch "
                f"median {torch_s:.2f} s; {results[0]['nodes']} nodes")
            rows.append(Row(f"Import of the pack beyond torch, {label}", f"{pack:.1f} ms",
                            f"{torch_s * 1000:.0f} ms (import torch)", pack / (torch_s * 1000), "≤ 50 ms",
                            pack <= 50))
    if any(not r.met for r in rows) or cfg.quick:
        costs = _import_costs()
        total = sum(c[0] for c in costs)
        say(f"  -X importtime (no bytecode cache; the tracing itself adds time): {len(costs)} modules after torch, "
            f"{total / 1000:.1f} ms self time; the largest:")
        for own, cumulative, name in sorted(costs, reverse=True)[:10]:
            say(f"    {own / 1000:7.1f} ms self {cumulative / 1000:8.1f} ms cumulative  {name}")
    return rows


# -- 6. memory ---------------------------------------------------------------------------------------------------------


def bench_memory(cfg: Settings) -> list[Row]:
    rows = []
    picture = photo(2048)
    with tempfile.TemporaryDirectory(prefix="zimage-bench-") as folder:
        runs = []
        for fmt in ("jpeg", "png"):
            path = Path(folder) / f"photo.{fmt}"
            path.write_bytes(encoded(picture, fmt))
            runs.append((fmt, "pack", _probe("memory", str(ROOT), str(path), "4", "pack")))
        runs.append(("png", "plain", _probe("memory", str(ROOT), str(Path(folder) / "photo.png"), "4", "plain")))
    for fmt, way, r in runs:
        factor = r["extra_mib"] / r["tensor_mib"]
        say(f"  {way:5s} 4 x {fmt.upper():4s} {r['shape']}: baseline {r['baseline_mib']:.0f} MiB (encoded "
            f"{r['encoded_mib']:.1f} MiB), peak {r['peak_mib']:.0f} MiB, extra {r['extra_mib']:.0f} MiB = "
            f"{factor:.2f}x the tensor ({r['tensor_mib']:.0f} MiB)" + ("" if r["hwm_reset"] else
                                                                       "  (peak not reset: upper bound)"))
        if way == "pack":
            rows.append(Row(f"Memory: decode 4 × 2048² {fmt.upper()}, peak extra", f"{r['extra_mib']:.0f} MiB",
                            f"{r['tensor_mib']:.0f} MiB (tensor)", factor, "≤ 1.5×", factor <= 1.5))
        else:
            rows.append(Row(f"Memory: plain per-picture + torch.cat, {fmt.upper()}", f"{r['extra_mib']:.0f} MiB",
                            f"{r['tensor_mib']:.0f} MiB (tensor)", factor, "(info)", None))
    return rows


# -- 7. task store -----------------------------------------------------------------------------------------------------


def _write_0_1_0_ledger(folder: Path, count: int, picture: Path) -> list[str]:
    """A ledger.jsonl in 0.1.0's line format: per task a ``submitted`` line, then a ``completed`` one with its copy."""
    ids = [f"task-bench-{n:06d}" for n in range(count)]
    start = time.time() - count
    with open(folder / "ledger.jsonl", "w", encoding="utf-8") as handle:
        for n, task_id in enumerate(ids):
            at = round(start + n, 3)
            handle.write(json.dumps({"task_id": task_id, "time": at, "event": "submitted", "provider": "qingbo",
                                     "model": "z-image-turbo", "prompt_sha256": f"{n:064x}",
                                     "params": {"aspect_ratio": "1:1", "resolution": "1K", "seed": n},
                                     "submitted_at": at, "status": "submitted", "base_url": "http://127.0.0.1:9"},
                                    separators=(",", ":")) + "\n")
            handle.write(json.dumps({"task_id": task_id, "time": at + 3, "event": "status", "status": "completed",
                                     "urls": [f"http://127.0.0.1:9/files/{n}.jpg"], "paths": [str(picture)],
                                     "cost_quota": 85}, separators=(",", ":")) + "\n")
    return ids


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bench_store(cfg: Settings) -> list[Row]:
    import random

    from tests.data.zimage_api_0_1_0.ledger import Ledger as Ledger010
    from tests.data.zimage_api_0_1_0.receipts import Receipts as Receipts010
    from zimage_api.budget import day_start
    from zimage_api.engine import fingerprint
    from zimage_api.store.sqlite import Price, new_owner
    from zimage_api.store.sqlite import Store as Ledger

    rows: list[Row] = []
    count = cfg.store_tasks
    with tempfile.TemporaryDirectory(prefix="zimage-bench-store-") as tmp:
        big, empty = Path(tmp) / "big", Path(tmp) / "empty"
        (big / "results").mkdir(parents=True)
        picture = big / "results" / "shared.jpg"
        picture.write_bytes(encoded(photo(256), "jpeg"))
        ids = _write_0_1_0_ledger(big, count, picture)
        size_mb = (big / "ledger.jsonl").stat().st_size / 1e6
        ledger = Ledger(big)
        seconds = _timed(lambda: ledger.get(ids[0]))  # the first open imports the whole ledger, once
        notes = ledger.store.imports()["ledger.jsonl"]
        say(f"  import: {notes['tasks']:,} tasks, {notes['events']:,} events ({size_mb:.0f} MB) in {seconds:.2f} s")
        rows.append(Row(f"Import of a {count:,}-task 0.1.0 ledger", f"{seconds:.2f} s", f"{size_mb:.0f} MB ledger",
                        None, "≤ 5 s", seconds <= 5.0))

        # Receipts of every task, written straight into the file (setup, not measured: 100,000 node runs).
        keys = [fingerprint("qingbo-submit", seed=n) for n in range(count)]
        with sqlite3.connect(ledger.path) as db:
            db.executemany("INSERT INTO receipts (fingerprint, task_id, created_at) VALUES (?, ?, 0)",
                           zip(keys, ids, strict=True))
        old_receipts = Path(tmp) / "old-receipts"
        old_receipts.mkdir()
        for key, task_id in list(zip(keys, ids, strict=True))[:5]:
            (old_receipts / f"{key}.task.json").write_text(json.dumps({"task_id": task_id}), encoding="utf-8")
        receipts = ledger
        picks = random.Random(7).sample(range(count), cfg.store_lookups)
        by_id = median([_timed(functools.partial(ledger.get, ids[n])) for n in picks])
        by_key = median([_timed(functools.partial(receipts.task_receipt, keys[n])) for n in picks])
        old_ledger = Ledger010(big)
        old_by_id = median([_timed(functools.partial(old_ledger.get, ids[n])) for n in picks[:3]])
        old = Receipts010(old_receipts, ledger=old_ledger)
        old_by_key = median([_timed(functools.partial(old.task_receipt, keys[n])) for n in range(3)])
        plan = ledger.store.query_plan("SELECT * FROM tasks WHERE task_id = ?", (ids[0],))
        say(f"  lookups ({cfg.store_lookups} random, medians): by id {by_id * 1000:.2f} ms, task receipt by "
            f"fingerprint {by_key * 1000:.2f} ms; 0.1.0 {old_by_id * 1000:,.0f} / {old_by_key * 1000:,.0f} ms; "
            f"plan: {plan[0]}")
        rows.append(Row(f"Lookup by task id, {count:,} tasks", f"{by_id * 1000:.2f} ms",
                        f"{old_by_id * 1000:,.0f} ms (0.1.0 ledger)", by_id / old_by_id, "≤ 2 ms",
                        by_id <= 0.002))
        rows.append(Row(f"Task receipt by fingerprint, {count:,} tasks", f"{by_key * 1000:.2f} ms",
                        f"{old_by_key * 1000:,.0f} ms (0.1.0 receipt)", by_key / old_by_key, "≤ 2 ms",
                        by_key <= 0.002))

        # What the claim adds to a paid unit: the claim and the note that the request goes out, before it; after
        # it, the task id is recorded (synced to disk, as before claims) with the release in the same transaction.
        owner = new_owner()
        claim_keys = [fingerprint("bench-claim", seed=n) for n in range(cfg.store_lookups)]

        def claim(key: str) -> None:
            ledger.claim(key, owner)
            ledger.mark_sending(key, owner)

        claim_cost = median([_timed(functools.partial(claim, key)) for key in claim_keys])
        record_cost = median([_timed(functools.partial(ledger.finish, key, owner, task_id=ids[0]))
                              for key in claim_keys])
        say(f"  claim + sending per paid unit ({count:,} tasks): {claim_cost * 1000:.2f} ms; then the task id and "
            f"release, synced: {record_cost * 1000:.2f} ms (medians of {len(claim_keys)})")
        rows.append(Row(f"Claim of a paid unit, {count:,} tasks", f"{claim_cost * 1000:.2f} ms",
                        f"{record_cost * 1000:.2f} ms (its synced record)", claim_cost / record_cost, "≤ 2 ms",
                        claim_cost <= 0.002))

        # The spend of every task (setup, not measured): 1 % of them today, spread since midnight, the others one a
        # minute before it (~68 days); a few tasks not collected yet. Then the claim that reserves the unit's price
        # against the daily budget in its own transaction.
        now = time.time()
        today = day_start(now)
        today_rows = count // 100
        earlier = count - today_rows

        def spent_at(n: int) -> float:
            return today - 60.0 * (earlier - n) if n < earlier else today + (now - today) * (n - earlier) / today_rows

        with sqlite3.connect(ledger.path) as db:
            db.executemany("INSERT INTO spend VALUES (?, 'qingbo', 'z-image-turbo', 0.0142, 'spent', ?, ?, ?)",
                           ((key, spent_at(n), task_id, day_start(spent_at(n)))
                            for n, (key, task_id) in enumerate(zip(keys, ids, strict=True))))
            db.execute("INSERT OR REPLACE INTO spend_days SELECT day, sum(usd) FROM spend GROUP BY day")
            db.executemany("UPDATE tasks SET status = 'submitted' WHERE task_id = ?", ((t,) for t in ids[-20:]))
        with sqlite3.connect(ledger.path) as db:
            spent_today = db.execute("SELECT count(*) FROM spend WHERE at >= ?", (today,)).fetchone()[0]
        price = Price("wavespeed", "wavespeed-ai/z-image/turbo", 0.005)
        budget_keys = [fingerprint("bench-budget", seed=n) for n in range(cfg.store_lookups)]

        def claim_within_budget(key: str) -> None:
            outcome = ledger.claim(key, owner, price=price, budget=1e6, day_start=today)
            assert outcome.kind == "claimed", outcome
            ledger.mark_sending(key, owner)

        budget_cost = median([_timed(functools.partial(claim_within_budget, key)) for key in budget_keys])
        for key in budget_keys:
            ledger.finish(key, owner, task_id=ids[1])
        say(f"  claim + sending with the price reserved against a daily budget ({count:,} tasks, {count:,} spend "
            f"rows, {spent_today:,} of them today): {budget_cost * 1000:.2f} ms (median of {len(budget_keys)})")
        rows.append(Row(f"Claim of a paid unit with its budget reserved, {count:,} tasks",
                        f"{budget_cost * 1000:.2f} ms",
                        f"{claim_cost * 1000:.2f} ms (no budget)", budget_cost / claim_cost, "≤ 2 ms",
                        budget_cost <= 0.002))

        # The panel's routes at the same store: today's spend, and the tasks not collected with the last paid ones
        # (their pictures looked up in an output folder of 1,000 collected files).
        routes = _load_routes()
        output = Path(tmp) / "output"
        (output / routes.OUTPUT_SUBFOLDER).mkdir(parents=True)
        for n in range(1000):
            (output / routes.OUTPUT_SUBFOLDER / f"task-other-{n:04d}_0.jpg").write_bytes(b"")
        spend_call = functools.partial(routes.spend_answer, ledger, now=now, day_start=today, budget=20.0,
                                       balance=None)
        tasks_call = functools.partial(routes.tasks_answer, ledger, now=now, output_dir=output)
        answer = tasks_call()
        spend_call()
        spend_cost = median([_timed(spend_call) for _ in range(cfg.store_reps)])
        tasks_cost = median([_timed(tasks_call) for _ in range(cfg.store_reps)])
        say(f"  /zimage/spend {spend_cost * 1000:.2f} ms, /zimage/tasks {tasks_cost * 1000:.2f} ms "
            f"({len(answer['unfinished'])} not collected, {len(answer['recent'])} recent listed; medians of "
            f"{cfg.store_reps})")
        rows.append(Row(f"Route /zimage/spend (spend_answer), {count:,} tasks and spend rows",
                        f"{spend_cost * 1000:.2f} ms", f"{spent_today:,} rows today", None, "≤ 50 ms",
                        spend_cost <= 0.050))
        rows.append(Row(f"Route /zimage/tasks (tasks_answer), {count:,} tasks and spend rows",
                        f"{tasks_cost * 1000:.2f} ms", f"{len(answer['unfinished'])} open, "
                        f"{len(answer['recent'])} recent", None, "≤ 50 ms", tasks_cost <= 0.050))

        # The worst day: every one of the spend rows today (a store filled by a script in one day).
        with sqlite3.connect(ledger.path) as db:
            db.execute("UPDATE spend SET at = ? + (rowid % 3600), day = ? WHERE state != 'reserved'", (today, today))
            db.execute("DELETE FROM spend_days")
            db.execute("INSERT INTO spend_days SELECT day, sum(usd) FROM spend WHERE state != 'released' GROUP BY day")
        heavy_keys = [fingerprint("bench-budget-heavy", seed=n) for n in range(cfg.store_lookups)]
        heavy_claim = median([_timed(functools.partial(claim_within_budget, key)) for key in heavy_keys])
        for key in heavy_keys:
            ledger.finish(key, owner, task_id=ids[1])
        heavy_spend = median([_timed(spend_call) for _ in range(cfg.store_reps)])
        say(f"  with all {count:,} spend rows today: claim with budget {heavy_claim * 1000:.2f} ms, /zimage/spend "
            f"{heavy_spend * 1000:.2f} ms")
        rows.append(Row(f"Claim with budget, all {count:,} spend rows today", f"{heavy_claim * 1000:.2f} ms",
                        f"{budget_cost * 1000:.2f} ms (a normal day)", heavy_claim / budget_cost, "≤ 2 ms",
                        heavy_claim <= 0.002))
        rows.append(Row(f"Route /zimage/spend, all {count:,} spend rows today", f"{heavy_spend * 1000:.2f} ms",
                        f"{spend_cost * 1000:.2f} ms (a normal day)", heavy_spend / spend_cost, "≤ 50 ms",
                        heavy_spend <= 0.050))

        # The same Submit -> Poll queued again: its receipt gives the task, whose pictures come from the local copy.
        emu = Emulator(queue_seconds=0.0, process_seconds=0.05, picture_scale=0.25).start()
        try:
            replays: dict[str, Callable[[], Any]] = {}
            for label, folder in (("empty", empty), ("full", big)):
                store_ledger = Ledger(folder)
                client = QingboClient(api_key=DEMO_KEY, base_url=emu.url, store=store_ledger)
                slips = store_ledger
                key = fingerprint("qingbo-submit", endpoint=emu.url, prompt="a lighthouse", seed=5)
                task = client.submit("a lighthouse", seed=5, idempotency_key=slips.idempotency_key(key))
                slips.save_task(key, task.task_id)
                client.collect(task.task_id)  # the first run: paid, collected, copied

                def again(client: QingboClient = client, slips: Ledger = slips, key: str = key) -> torch.Tensor:
                    earlier, _spent = slips.task_receipt(key)
                    result = client.collect(str(earlier))
                    return zimages.bytes_to_tensor(result.images)[0]

                again()
                replays[label] = again
            sent = len(emu.requests)
            full_times, empty_times = side_by_side(replays["full"], replays["empty"], cfg.store_reps)
            assert len(emu.requests) == sent, "a re-queued run sent a request"
        finally:
            emu.stop()
        full, base = median(full_times), median(empty_times)
        say(f"  re-queued Submit -> Poll: {count:,}-task store {full * 1000:.1f} ms, empty store {base * 1000:.1f} ms "
            f"(medians of {cfg.store_reps}, no request sent)")
        rows.append(Row(f"Submit → Poll queued again, {count:,}-task store", f"{full * 1000:.1f} ms",
                        f"{base * 1000:.1f} ms (empty store)", full / base, "≤ 1.3×", full / base <= 1.3))
    return rows + _engine_rows(cfg)


def _previous_release(folder: Path) -> Path:
    """The pack at the previous release's commit, unpacked from this repository's history into ``folder``."""
    import tarfile

    done = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_RELEASE],
                          capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git archive {PREVIOUS_RELEASE} failed: {done.stderr.decode(errors='replace')[-400:]}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(folder, filter="data")
    return folder


def _engine_rows(cfg: Settings) -> list[Row]:
    """The engine's whole path for a unit served from its receipt, in a store of ``store_tasks`` tasks against an
    empty one, in this release and the previous one (each in a fresh process, with its own API and emulator)."""
    count = cfg.store_tasks
    times: dict[str, dict[str, list[float]]] = {"this": {"full": [], "empty": []},
                                                "previous": {"full": [], "empty": []}}
    with tempfile.TemporaryDirectory(prefix="zimage-bench-engine-") as tmp:
        old = _previous_release(Path(tmp) / "previous")
        for turn in range(cfg.engine_turns):  # the releases alternate, each in its own process
            for release, root in (("this", ROOT), ("previous", old)):
                folder = Path(tmp) / f"{release}-{turn}"
                folder.mkdir()
                result = _probe("engine", str(root), str(folder), str(count), str(cfg.store_reps), timeout=600)
                times[release]["full"] += result["full_s"]
                times[release]["empty"] += result["empty_s"]
    this_full, this_empty = median(times["this"]["full"]), median(times["this"]["empty"])
    old_full, old_empty = median(times["previous"]["full"]), median(times["previous"]["empty"])
    this_ratio, old_ratio = this_full / this_empty, old_full / old_empty
    say(f"  engine, one unit served from its receipt ({count:,} tasks | empty store, medians of "
        f"{len(times['this']['full'])}): this release {this_full * 1000:.2f} | {this_empty * 1000:.2f} ms "
        f"({this_ratio:.2f}x), {PREVIOUS_RELEASE} {old_full * 1000:.2f} | {old_empty * 1000:.2f} ms "
        f"({old_ratio:.2f}x); this / previous at {count:,} tasks {this_full / old_full:.2f}")
    return [
        Row(f"Engine, a unit served from its receipt, {count:,} tasks", f"{this_full * 1000:.2f} ms",
            f"{this_empty * 1000:.2f} ms (empty store)", this_ratio, "≤ 1.3×", this_ratio <= 1.3),
        Row(f"  the same at {PREVIOUS_RELEASE} (previous release)", f"{old_full * 1000:.2f} ms",
            f"{old_empty * 1000:.2f} ms (empty store)", old_ratio, "(info)", None),
        Row(f"Engine receipt hit, {count:,} tasks: this release vs {PREVIOUS_RELEASE}", f"{this_full * 1000:.2f} ms",
            f"{old_full * 1000:.2f} ms ({PREVIOUS_RELEASE})", this_full / old_full, "≤ 1.10× (no regression)",
            this_full / old_full <= 1.10),
    ]


def _load_routes() -> Any:
    """The pack's server_routes module (plain functions behind the /zimage/ routes), imported with the pack."""
    import importlib

    nodes = _load_pack()
    return importlib.import_module(nodes.__name__.rsplit(".", 1)[0] + ".server_routes")


# -- main --------------------------------------------------------------------------------------------------------------


# -- 7. nodes side by side ---------------------------------------------------------------------------------------------


def _load_pack() -> Any:
    """The pack's nodes module, imported the way ComfyUI imports a custom node folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("comfyui_zimage_bench", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return sys.modules[f"{spec.name}.nodes"]


def _generate_call(nodes: Any, seed: int, count: int = 1) -> Callable[[], Any]:
    node = nodes.ZImageGenerate()
    return lambda: node.generate(prompt=f"bench nodes {seed}", negative_prompt="", model="Z-Image-Base",
                                 api="v1/images", guidance_scale=7.5, width=256, height=256, seed=seed, count=count,
                                 unique_id=str(seed))


def _await_like_comfyui(calls: list[Callable[[], Any]], local: Callable[[], None] | None = None) -> float:
    """Await the node coroutines as ComfyUI's executor does (each its own task, the loop free meanwhile), with an
    optional synchronous local node run inline on the loop after they started; returns the wall time."""
    import asyncio

    async def graph() -> None:
        tasks = [asyncio.ensure_future(call()) for call in calls]
        await asyncio.sleep(0)  # let every node reach its first await, as the executor's PENDING pass does
        if local is not None:
            local()
        await asyncio.gather(*tasks)

    started = time.perf_counter()
    asyncio.run(graph())
    return time.perf_counter() - started


def bench_nodes(cfg: Settings) -> list[Row]:
    latency = cfg.nodes_latency
    rows: list[Row] = []
    nodes = _load_pack()
    saved = {name: os.environ.get(name) for name in ("WAVESPEED_API_KEY", "WAVESPEED_BASE_URL",
                                                     "ZIMAGE_WAVESPEED_CONCURRENCY", "ZIMAGE_DATA_DIR",
                                                     "ZIMAGE_REUSE_RESULTS")}
    data = tempfile.TemporaryDirectory()
    os.environ.update(WAVESPEED_API_KEY=DEMO_KEY, ZIMAGE_DATA_DIR=data.name, ZIMAGE_REUSE_RESULTS="0")
    try:
        # Three independent nodes of L each, with a limit of 3: side by side they take about L.
        emu = Emulator(sync_latency=latency).start()
        try:
            os.environ.update(WAVESPEED_BASE_URL=emu.url, ZIMAGE_WAVESPEED_CONCURRENCY="3")
            wall = _await_like_comfyui([_generate_call(nodes, seed) for seed in (1, 2, 3)])
            say(f"  3 Generate nodes of L={latency:g} s, limit 3: {wall:.2f} s = {wall / latency:.2f} L "
                f"(one after another: {3 * latency:.0f} s); emulator peak {emu.peak_concurrency}")
            rows.append(Row(f"3 nodes of L={latency:g} s side by side (limit 3): wall", f"{wall:.2f} s",
                            f"{3 * latency:.0f} s (in turn)", wall / (3 * latency), f"≤ {1.5 * latency:.2f} s (1.5·L)",
                            wall <= 1.5 * latency))

            # One API node beside a slow local node (run inline on the loop, as ComfyUI runs synchronous nodes).
            def local() -> None:
                time.sleep(latency)

            started = time.perf_counter()
            local()
            alone_local = time.perf_counter() - started
            alone_api = _await_like_comfyui([_generate_call(nodes, 4)])
            both = _await_like_comfyui([_generate_call(nodes, 5)], local=local)
            say(f"  API node alone {alone_api:.2f} s, local node alone {alone_local:.2f} s, both in one graph "
                f"{both:.2f} s (in turn: {alone_api + alone_local:.2f} s)")
            rows.append(Row("API node beside a local node: wall", f"{both:.2f} s",
                            f"{alone_api + alone_local:.2f} s (in turn)", both / (alone_api + alone_local),
                            f"≤ {1.3 * max(alone_api, alone_local):.2f} s (1.3·the longer)",
                            both <= 1.3 * max(alone_api, alone_local)))
        finally:
            emu.stop()

        # WaveSpeed's default tier allows 2 at once: 3 nodes x count 2 under the default limit never send a third.
        emu = Emulator(sync_latency=latency, max_concurrent=2).start()
        try:
            os.environ["WAVESPEED_BASE_URL"] = emu.url
            os.environ.pop("ZIMAGE_WAVESPEED_CONCURRENCY", None)
            wall = _await_like_comfyui([_generate_call(nodes, seed, count=2) for seed in (10, 20, 30)])
            sent = emu.requests_to("POST /v1/images/generations")
            refused = sum(1 for r in sent if r.status == 429)
            peak = emu.peak_concurrency
            ideal = 3 * latency
            say(f"  3 nodes x count 2, emulator limit 2, default pack limit: {wall:.2f} s (ideal {ideal:.1f} s); "
                f"{len(sent)} requests, peak {peak} in flight, {refused} answered 429")
            rows.append(Row("3 nodes x count 2, emulator limit 2: wall", f"{wall:.2f} s", f"{ideal:.1f} s (ideal)",
                            wall / ideal, f"peak ≤ 2, no 429 (peak {peak}, {refused})", peak <= 2 and refused == 0))
        finally:
            emu.stop()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        data.cleanup()
    return rows


# -- 9. bounds ---------------------------------------------------------------------------------------------------------


def bench_bounds(cfg: Settings) -> list[Row]:
    import tracemalloc

    from zimage_api.config import QINGBO
    from zimage_api.errors import APITimeoutError, ResponseTooLargeError, ResultDownloadTimeoutError
    from zimage_api.http.deadline import Deadline
    from zimage_api.http.transport import MAX_PICTURE_BYTES, Transport

    rows = []
    cap_mib = MAX_PICTURE_BYTES / 2**20
    with Emulator(qingbo_keys={DEMO_KEY}) as emu:
        transport = Transport(QINGBO, api_key=DEMO_KEY, base_url=emu.url + "/v1",
                              timeout=(5.0, cfg.bounds_read_timeout))
        url = f"{emu.url}/files/{'ab' * 16}.png"

        emu.inject("GET /files/*", "endless")
        tracemalloc.start()
        started = time.perf_counter()
        try:
            transport.download(url)
        except ResponseTooLargeError:
            pass
        took = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        ratio = peak / MAX_PICTURE_BYTES
        say(f"  endless picture body: stopped at the {cap_mib:.0f} MiB cap in {ms(took)}, peak traced "
            f"{peak / 2**20:.0f} MiB = {ratio:.2f}x the cap")
        rows.append(Row("Bounds: endless body, peak memory until the cap", f"{peak / 2**20:.0f} MiB",
                        f"{cap_mib:.0f} MiB (cap)", ratio, "≤ 1.25×", ratio <= 1.25))
        rows.append(Row("Bounds: endless body, time until the cap", ms(took), "(info)", None, "(info)", None))

        emu.inject("POST /v1/tasks", "trickle", bytes_per_second=2)
        patient = Transport(QINGBO, api_key=DEMO_KEY, base_url=emu.url + "/v1")  # the default 60 s read timeout
        deadline = Deadline.after(cfg.bounds_deadline)
        started = time.perf_counter()
        try:
            patient.request_json("POST", "/v1/tasks", json={"prompt": "a trickle"}, deadline=deadline)
        except APITimeoutError:
            pass
        took = time.perf_counter() - started
        ratio = took / cfg.bounds_deadline
        say(f"  body at 2 B/s, timeout {cfg.bounds_deadline:g} s: stopped after {took:.2f} s = {ratio:.2f}x")
        target = (cfg.bounds_deadline + 2) / cfg.bounds_deadline
        rows.append(Row(f"Bounds: 2 B/s body, timeout {cfg.bounds_deadline:g} s", f"{took:.2f} s",
                        f"{cfg.bounds_deadline:g} s (timeout)", ratio, f"≤ {target:.2f}× (T + 2 s)",
                        took <= cfg.bounds_deadline + 2))

        emu.inject("GET /files/*", "delay", times=10, seconds=cfg.bounds_read_timeout * 4)
        before = len(emu.requests_to("GET /files/*"))
        started = time.perf_counter()
        try:
            transport.download(url)
        except ResultDownloadTimeoutError:
            pass
        took = time.perf_counter() - started
        ratio = took / cfg.bounds_read_timeout
        say(f"  download that never answers, read timeout {cfg.bounds_read_timeout:g} s: gave up after "
            f"{took:.2f} s = {ratio:.2f}x ({len(emu.requests_to('GET /files/*')) - before} tries)")
        rows.append(Row("Bounds: download never answering, no deadline", f"{took:.2f} s",
                        f"{cfg.bounds_read_timeout:g} s (read timeout)", ratio, "≤ 1.5× + 1 s",
                        took <= cfg.bounds_read_timeout * 1.5 + 1))
    return rows


# -- 10. farm: the shared store in PostgreSQL beside SQLite ------------------------------------------------------------

# One ComfyUI of a farm in its own process: ``units`` paid units side by side (a thread each, as the pack's pool runs
# them), each holding one of the provider's slots through the shared store while its request takes ``latency``.
FARM_WORKER = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from zimage_api.limits import ProviderLimits
from zimage_api.store import LeaseKeeper, Store
kind, where, folder = sys.argv[2], sys.argv[3], sys.argv[4]
units, latency, limit, start = int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
if kind == "postgres":
    from zimage_api.store.postgres import PostgresStore
    store = PostgresStore(where, folder)
else:
    store = Store(folder)
store.check_writable()
limits = ProviderLimits({"wavespeed": limit})
keeper = LeaseKeeper(store)
spans, errors, lock = [], [], threading.Lock()
def unit():
    try:
        with limits.slot("wavespeed", store=store, keeper=keeper):
            began = time.time()
            time.sleep(latency)
            ended = time.time()
        with lock:
            spans.append((began, ended))
    except BaseException as err:
        errors.append(repr(err))
threads = [threading.Thread(target=unit) for _ in range(units)]
late = time.time() - start
time.sleep(max(0.0, start - time.time()))
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"spans": spans, "done": time.time(), "late": late, "errors": errors}))
"""


@contextlib.contextmanager
def _pg_schema(base: str) -> Iterator[str]:
    """A fresh schema on the server of ``base`` for one run (a URL whose sessions work in it), dropped afterwards."""
    import uuid

    import psycopg
    from psycopg import sql

    from zimage_api.store.postgres import PostgresStore

    schema = f"zbench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield with_schema(base, schema)
        finally:
            PostgresStore.close_all()
            conn.execute("SET lock_timeout = '20s'")
            try:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            except psycopg.Error as err:
                say(f"  ** schema {schema} could not be dropped ({type(err).__name__}); drop it by hand **")


def _farm_rows(count: int, now: float) -> dict[str, list[tuple[Any, ...]]]:
    """The same history for both stores: ``count`` completed tasks with a local picture each, their receipts (a task
    id) and their spend, one unit a minute back from now."""
    from zimage_api.budget import day_start
    from zimage_api.engine import fingerprint

    tasks, pictures, receipts, spend = [], [], [], []
    for n in range(count):
        at = now - 60.0 * (count - n)
        task_id = f"task-farm-{n:06d}"
        key = fingerprint("bench-farm-history", seed=n)
        tasks.append((task_id, "qingbo", "http://127.0.0.1:9", "z-image-turbo", f"{n:064x}",
                      json.dumps({"seed": n}), "completed", at, at + 3, None, '{"took":3.0,"cost_quota":85}'))
        pictures.append((task_id, 0, f"/nowhere/results/{task_id}_0.jpg", None))
        receipts.append((key, task_id, at))
        spend.append((key, "qingbo", "z-image-turbo", 0.0142, "spent", at, task_id, day_start(at)))
    return {"tasks": tasks, "pictures": pictures, "receipts": receipts, "spend": spend}


FARM_COLUMNS = {
    "tasks": "task_id, provider, base_url, model, prompt_sha256, params_json, status, submitted_at, updated_at, "
             "batch_row, extra_json",
    "pictures": "task_id, idx, path, sha256",
    "receipts": "fingerprint, task_id, created_at",
    "spend": "fingerprint, provider, model, usd, state, at, task_id, day",
}


def _fill_sqlite(path: Path, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    with sqlite3.connect(path) as db:
        for table, columns in FARM_COLUMNS.items():
            marks = ", ".join("?" * len(columns.split(",")))
            db.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows[table])
        db.execute("INSERT OR REPLACE INTO spend_days SELECT day, sum(usd) FROM spend GROUP BY day")
        db.execute("ANALYZE")
    sqlite3.connect(path).close()


def _fill_postgres(url: str, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:  # one transaction, COPY per table
        with conn.cursor() as cursor:
            for table, columns in FARM_COLUMNS.items():
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows[table]:
                        copy.write_row(row)
            cursor.execute("INSERT INTO spend_days SELECT day, sum(usd) FROM spend GROUP BY day "
                           "ON CONFLICT (day) DO UPDATE SET usd = excluded.usd")
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("ANALYZE")


def _peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one moment (a span that ends when another starts does not overlap it)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    now = peak = 0
    for _at, step in events:
        now += step
        peak = max(peak, now)
    return peak


def _farm_limit(kind: str, where: str, folder: Path, cfg: Settings) -> dict[str, Any]:
    """``farm_processes`` processes of ``farm_units`` units each, sharing ``farm_limit`` slots through one store."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.time() + cfg.farm_head_start
    workers = [subprocess.Popen([sys.executable, "-c", FARM_WORKER, str(ROOT), kind, where, str(folder),
                                 str(cfg.farm_units), str(cfg.farm_latency), str(cfg.farm_limit), repr(start)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=tempfile.gettempdir()) for _ in range(cfg.farm_processes)]
    answers = []
    for worker in workers:
        out, err = worker.communicate(timeout=cfg.farm_head_start + 8 * cfg.farm_units * cfg.farm_latency + 120)
        if worker.returncode != 0:
            raise RuntimeError(f"{kind} farm process failed ({worker.returncode}): {err.strip()[-800:]}")
        answers.append(json.loads(out.strip().splitlines()[-1]))
    errors = [e for a in answers for e in a["errors"]]
    if errors:
        raise RuntimeError(f"{len(errors)} {kind} farm unit(s) failed: {errors[0]}")
    spans = [(float(began), float(ended)) for a in answers for began, ended in a["spans"]]
    return {"wall": max(a["done"] for a in answers) - start, "peak": _peak_overlap(spans),
            "units": len(spans), "late": max(a["late"] for a in answers)}


def bench_farm(cfg: Settings, postgres: str) -> list[Row]:
    """The store a farm shares (PostgreSQL) beside the store in one data folder (SQLite), in the same run: the cost of
    a paid unit's records, a receipt hit and the lookups at ``store_tasks`` tasks, and the provider's limit held
    across processes."""
    if not postgres:
        say("  skipped: no PostgreSQL server given (--postgres URL, or ZIMAGE_TEST_POSTGRES_URL)")
        return []
    try:
        import psycopg  # noqa: F401
    except ImportError:
        say('  skipped: the PostgreSQL driver is not installed (pip install "psycopg[binary]")')
        return []
    import random

    from zimage_api.budget import day_start
    from zimage_api.engine import fingerprint
    from zimage_api.results import GenerationResult
    from zimage_api.store import Price, Store, new_owner
    from zimage_api.store.postgres import PostgresStore, store_address

    count = cfg.store_tasks
    names = ("SQLite", "PostgreSQL")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="zimage-bench-farm-") as tmp, _pg_schema(postgres) as url:
        say(f"  PostgreSQL at {store_address(postgres)} (a fresh schema, dropped at the end); SQLite in a temporary "
            "folder")
        stores: dict[str, Store] = {"SQLite": Store(Path(tmp) / "sqlite"),
                                    "PostgreSQL": PostgresStore(url, Path(tmp) / "postgres")}
        for store in stores.values():
            store.check_writable()  # creates the tables
        now = time.time()
        history = _farm_rows(count, now)
        for name, fill in (("SQLite", lambda: _fill_sqlite(stores["SQLite"].path, history)),
                           ("PostgreSQL", lambda: _fill_postgres(url, history))):
            say(f"  {name}: {count:,} tasks, pictures, receipts and spend rows written in {_timed(fill):.2f} s "
                "(setup)")
        today = day_start(now)
        price = Price("wavespeed", "wavespeed-ai/z-image/turbo", 0.005)
        owner = new_owner()

        def alternate(reps: int, op: Callable[[Store, int], dict[str, float]]) -> dict[str, dict[str, list[float]]]:
            """``op(store, rep)`` on each store in turn (ABBA order, one warm-up each); its timings by store. The
            garbage collector is off meanwhile (with torch loaded, one collection costs more than the figures)."""
            times: dict[str, dict[str, list[float]]] = {name: {} for name in names}
            for name in names:
                op(stores[name], -1)
            gc.collect()
            gc.disable()
            try:
                for rep in range(reps):
                    for name in (names if rep % 2 == 0 else names[::-1]):
                        for part, seconds in op(stores[name], rep).items():
                            times[name].setdefault(part, []).append(seconds)
            finally:
                gc.enable()
            return times

        # 1. What each paid unit writes: its claim (with its price reserved against the budget), its task id the moment
        # it is known, and the outcome that releases the claim.
        def paid_unit(store: Store, rep: int) -> dict[str, float]:
            key = fingerprint("bench-farm-unit", seed=rep)
            task_id = f"task-farm-unit-{rep}"
            t0 = time.perf_counter()
            outcome = store.claim(key, owner, price=price, budget=1e6, day_start=today)
            t1 = time.perf_counter()
            store.record_submitted(task_id, provider="wavespeed", model=price.model, prompt_sha256=f"{rep:064x}",
                                   params={"seed": rep})
            t2 = time.perf_counter()
            store.finish(key, owner, task_id=task_id)
            t3 = time.perf_counter()
            assert outcome.kind == "claimed", outcome
            return {"all": t3 - t0, "claim": t1 - t0, "record": t2 - t1, "finish": t3 - t2}

        unit = alternate(cfg.farm_samples, paid_unit)
        med = {name: median(unit[name]["all"]) for name in names}
        p90 = {name: quantile(unit[name]["all"], 0.9) for name in names}
        for name in names:
            steps = ", ".join(f"{part} {median(unit[name][part]) * 1000:.2f} · "
                              f"{quantile(unit[name][part], 0.9) * 1000:.2f}" for part in ("claim", "record", "finish"))
            say(f"  paid unit, claim -> record_submitted -> finish ({count:,} tasks), {name}: median "
                f"{med[name] * 1000:.2f} ms, p90 {p90[name] * 1000:.2f} ms (median · p90 ms of each step: {steps}; "
                f"{cfg.farm_samples} units)")
        say(f"  paid unit: PostgreSQL / SQLite {med['PostgreSQL'] / med['SQLite']:.2f} (median), "
            f"{p90['PostgreSQL'] / p90['SQLite']:.2f} (p90)")
        rows.append(Row(f"Paid unit: claim → record → finish, {count:,} tasks, PostgreSQL (median · p90)",
                        f"{med['PostgreSQL'] * 1000:.2f} ms · {p90['PostgreSQL'] * 1000:.2f} ms",
                        f"{med['SQLite'] * 1000:.2f} ms · {p90['SQLite'] * 1000:.2f} ms (SQLite)",
                        med["PostgreSQL"] / med["SQLite"], "≤ 5 ms (PostgreSQL)", med["PostgreSQL"] <= 0.005))

        # 2. A receipt hit: the claim finds the receipt, and its picture is read back (from the database in
        # PostgreSQL, from the data folder in SQLite) and checked.
        png = encoded(photo(128), "png")
        receipt_key = fingerprint("bench-farm-receipt", seed=1)
        for store in stores.values():
            store.keep_result(receipt_key, GenerationResult(provider="wavespeed", protocol="v3", model=price.model,
                                                            images=[png], prompt_sha256="0" * 64, seeds=[1],
                                                            size=(128, 128)))

        def receipt_hit(store: Store, rep: int) -> dict[str, float]:
            t0 = time.perf_counter()
            outcome = store.claim(receipt_key, owner, price=price, budget=1e6, day_start=today)
            result = store.load_result(receipt_key)
            took = time.perf_counter() - t0
            assert outcome.kind == "receipt" and result is not None and result.images == [png], outcome
            return {"all": took}

        hit = alternate(cfg.farm_samples, receipt_hit)
        hit_med = {name: median(hit[name]["all"]) for name in names}
        hit_p90 = {name: quantile(hit[name]["all"], 0.9) for name in names}
        say(f"  receipt hit, claim + load_result of a {len(png) / 1000:.0f} kB PNG ({count:,} tasks): SQLite "
            f"{hit_med['SQLite'] * 1000:.2f} ms (p90 {hit_p90['SQLite'] * 1000:.2f}), PostgreSQL "
            f"{hit_med['PostgreSQL'] * 1000:.2f} ms (p90 {hit_p90['PostgreSQL'] * 1000:.2f}); PostgreSQL / SQLite "
            f"{hit_med['PostgreSQL'] / hit_med['SQLite']:.2f}")
        rows.append(Row(f"Receipt hit: claim + load_result, {len(png) / 1000:.0f} kB PNG, PostgreSQL",
                        f"{hit_med['PostgreSQL'] * 1000:.2f} ms", f"{hit_med['SQLite'] * 1000:.2f} ms (SQLite)",
                        hit_med["PostgreSQL"] / hit_med["SQLite"], "(info)", None))

        # 4. Lookups at ``count`` tasks: a task by id, the task receipt by fingerprint, and the claim of an unknown
        # fingerprint (released afterwards, not timed).
        picks = random.Random(11).sample(range(count), cfg.store_lookups)
        ids = [history["tasks"][n][0] for n in picks]
        keys = [history["receipts"][n][0] for n in picks]

        def lookups(store: Store, rep: int) -> dict[str, float]:
            n = rep % len(picks)
            key = fingerprint("bench-farm-unknown", seed=rep)
            t0 = time.perf_counter()
            entry = store.get(ids[n])
            t1 = time.perf_counter()
            usable, _spent = store.task_receipt(keys[n])
            t2 = time.perf_counter()
            outcome = store.claim(key, owner)
            t3 = time.perf_counter()
            store.release(key, owner)
            assert entry is not None and usable == ids[n] and outcome.kind == "claimed", (entry, usable, outcome)
            return {"task": t1 - t0, "receipt": t2 - t1, "claim": t3 - t2}

        looked = alternate(cfg.store_lookups, lookups)
        for part, label in (("task", "Lookup of a task by id"), ("receipt", "Task receipt by fingerprint"),
                            ("claim", "Claim of an unknown fingerprint")):
            pg, lite = median(looked["PostgreSQL"][part]), median(looked["SQLite"][part])
            say(f"  {label.lower()} ({count:,} tasks, medians of {cfg.store_lookups}): SQLite {lite * 1000:.2f} ms, "
                f"PostgreSQL {pg * 1000:.2f} ms; PostgreSQL / SQLite {pg / lite:.2f}")
            rows.append(Row(f"{label}, {count:,} tasks, PostgreSQL", f"{pg * 1000:.2f} ms",
                            f"{lite * 1000:.2f} ms (SQLite)", pg / lite, "≤ 2 ms", pg <= 0.002))
        for store in stores.values():
            store.close()

        # 3. The provider's limit across processes: each its own store connection, one limit between them all.
        ideal = cfg.farm_processes * cfg.farm_units / cfg.farm_limit * cfg.farm_latency
        for name, kind, where in (("SQLite", "sqlite", str(Path(tmp) / "shared-sqlite")),
                                  ("PostgreSQL", "postgres", url)):
            got = _farm_limit(kind, where, Path(tmp) / f"farm-{kind}", cfg)
            ratio = got["wall"] / ideal
            say(f"  {cfg.farm_processes} processes x {cfg.farm_units} units of L={cfg.farm_latency:g} s, limit "
                f"{cfg.farm_limit} through one {name} store: {got['wall']:.2f} s against {ideal:.0f} s ideal = "
                f"{ratio:.2f}x; peak {got['peak']} in flight ({got['units']} units; the last process was ready "
                f"{-got['late']:.2f} s before the start)")
            rows.append(Row(f"{cfg.farm_processes} processes × {cfg.farm_units} units, L={cfg.farm_latency:g} s, "
                            f"limit {cfg.farm_limit}, {name}: wall", f"{got['wall']:.2f} s",
                            f"{ideal:.0f} s (ideal)", ratio, f"≤ 1.10×, peak ≤ {cfg.farm_limit} (peak {got['peak']})",
                            ratio <= 1.10 and got["peak"] <= cfg.farm_limit))
    return rows


def table(rows: list[Row]) -> str:
    header = ("metric", "pack", "floor/peer", "ratio", "target", "met?")
    cells = [header] + [
        (r.metric, r.pack, r.other, "" if r.ratio is None else f"{r.ratio:.2f}", r.target,
         "" if r.met is None else ("yes" if r.met else "NO")) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip() for cell in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of every section; figures not meaningful")
    parser.add_argument("--only", default="", help=f"comma-separated sections to run: {', '.join(SECTIONS)}")
    parser.add_argument("--postgres", default=os.environ.get("ZIMAGE_TEST_POSTGRES_URL", ""), metavar="URL",
                        help="a PostgreSQL server for the farm section, which works in a schema of its own and drops "
                             "it (default: $ZIMAGE_TEST_POSTGRES_URL; without one the section is skipped)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    cfg = Settings.make(args.quick)
    started = time.perf_counter()
    say("comfyui-zimage benchmark" + (" (--quick: smoke run, figures not meaningful)" if cfg.quick else ""))
    for line in machine():
        say("  " + line)
    rows: list[Row] = []
    crashed: list[str] = []
    emu = Emulator().start()  # for the decode section's downloads
    try:
        for number, (name, run) in enumerate([
            ("decode", lambda: bench_decode(cfg, emu)),
            ("upload", lambda: bench_upload(cfg)),
            ("lag", lambda: bench_lag(cfg)),
            ("many", lambda: bench_many(cfg)),
            ("import", lambda: bench_import(cfg)),
            ("memory", lambda: bench_memory(cfg)),
            ("nodes", lambda: bench_nodes(cfg)),
            ("store", lambda: bench_store(cfg)),
            ("bounds", lambda: bench_bounds(cfg)),
            ("farm", lambda: bench_farm(cfg, args.postgres)),
        ], start=1):
            if name not in chosen:
                continue
            section_started = time.perf_counter()
            say(f"\n{number}. {name}")
            try:
                rows += run()
            except Exception:  # noqa: BLE001 - the other sections still run; the exit status reports it
                crashed.append(name)
                traceback.print_exc()
            say(f"  ({time.perf_counter() - section_started:.1f} s)")
    finally:
        emu.stop()
    say("\n" + table(rows))
    say(f"\ntotal {time.perf_counter() - started:.1f} s; load average at the end {load_average()}")
    if crashed:
        say(f"crashed sections: {', '.join(crashed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
