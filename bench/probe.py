"""Measurements that need a fresh Python process; ``bench/run.py`` starts this script and reads one JSON line.

    python bench/probe.py import PACK_DIR [PYCACHE_DIR]
        Import torch, then load the pack's ``__init__.py`` the way ComfyUI loads a custom node folder.
        With PYCACHE_DIR, bytecode for what is imported after torch is read from and written to that folder
        (``sys.pycache_prefix``), as in an installation where Python may write ``__pycache__``; without it, the
        interpreter's own settings apply. Prints {"torch_s": ..., "pack_ms": ..., "nodes": ...}.

    python bench/probe.py memory PACK_DIR FILE COUNT WAY
        Read FILE COUNT times (the encoded pictures), then decode them into one IMAGE batch, WAY being "pack"
        (zimage_api.images.bytes_to_tensor) or "plain" (one float tensor per picture, then torch.cat).
        Prints the resident memory before and at the peak of the decode, and the batch's size.

    python bench/probe.py engine PACK_DIR FOLDER TASKS REPS
        With the pack in PACK_DIR (this release or an earlier one, each with its own API), time
        ``Engine(...).pictures(order)`` of a one-picture order served from its receipt (no request sent) in a store
        of TASKS tasks, TASKS receipts and (where the store has them) TASKS spend rows made in FOLDER, against the
        same in an empty store: alternately, REPS times each, after one paid run in each store against the pack's
        own emulator. Prints the times in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from typing import Any


def _import_probe(pack_dir: str, pycache: str | None) -> dict[str, object]:
    started = time.perf_counter()
    importlib.import_module("torch")  # ComfyUI has imported it long before it loads custom nodes

    if pycache:
        sys.pycache_prefix = pycache
        sys.dont_write_bytecode = False
    torch_done = time.perf_counter()
    spec = importlib.util.spec_from_file_location(
        "comfyui-zimage", f"{pack_dir}/__init__.py", submodule_search_locations=[pack_dir])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    pack_done = time.perf_counter()
    return {"torch_s": torch_done - started, "pack_ms": (pack_done - torch_done) * 1000.0,
            "nodes": len(getattr(module, "NODE_CLASS_MAPPINGS", {}))}


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False when the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") <= _status_kib("VmRSS") + 64


def _memory_probe(pack_dir: str, path: str, count: int, way: str) -> dict[str, object]:
    import gc
    import io

    sys.path.insert(0, pack_dir)
    import numpy as np
    import torch
    from PIL import Image

    from zimage_api.images import bytes_to_tensor

    def plain(blobs: list[bytes]) -> torch.Tensor:
        return torch.cat([torch.from_numpy(np.asarray(Image.open(io.BytesIO(b))) / np.float32(255))[None]
                          for b in blobs])

    def pack(blobs: list[bytes]) -> torch.Tensor:
        return bytes_to_tensor(blobs)[0]

    decode = pack if way == "pack" else plain
    # Warm the codecs on a tiny picture so that loading them is not counted; it leaves almost nothing allocated.
    tiny = io.BytesIO()
    with open(path, "rb") as handle:
        head = handle.read(4)
    Image.new("RGB", (16, 16), (90, 120, 150)).save(tiny, format="PNG" if head.startswith(b"\x89PNG") else "JPEG")
    decode([tiny.getvalue()] * 2)
    blobs = []
    for _ in range(count):
        with open(path, "rb") as handle:
            blobs.append(handle.read())
    gc.collect()
    reset = _reset_peak()
    baseline = _status_kib("VmRSS")
    hwm_before = _status_kib("VmHWM")
    image = decode(blobs)
    peak = _status_kib("VmHWM")
    after = _status_kib("VmRSS")
    if not reset:
        peak = max(peak, hwm_before)
    return {"way": way, "hwm_reset": reset, "baseline_mib": baseline / 1024, "peak_mib": peak / 1024,
            "after_mib": after / 1024, "extra_mib": (peak - baseline) / 1024,
            "tensor_mib": image.numel() * image.element_size() / 2**20, "shape": list(image.shape),
            "encoded_mib": sum(len(b) for b in blobs) / 2**20}


def _fill(path: str, tasks: int) -> None:
    """``tasks`` completed tasks, one receipt each and (where the store has the table) one spend row each, written
    straight into the store's file (setup, not measured)."""
    import sqlite3

    now = time.time()
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO tasks (task_id, provider, base_url, model, prompt_sha256, params_json, status, "
                       "submitted_at, updated_at) VALUES (?, 'qingbo', 'http://127.0.0.1:9', 'z-image-turbo', ?, "
                       "'{}', 'completed', ?, ?)",
                       ((f"task-bench-{n:06d}", f"{n:064x}", now - tasks + n, now - tasks + n + 3)
                        for n in range(tasks)))
        db.executemany("INSERT INTO receipts (fingerprint, task_id, created_at) VALUES (?, ?, ?)",
                       ((f"{n:064x}", f"task-bench-{n:06d}", now - tasks + n) for n in range(tasks)))
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'spend'").fetchone():
            columns = len(db.execute("PRAGMA table_info(spend)").fetchall())
            marks = ", ".join("?" * (columns - 5))  # a release whose spend rows name their day has one more
            db.executemany(f"INSERT INTO spend VALUES (?, 'qingbo', 'z-image-turbo', 0.01, 'spent', {marks})",
                           ((f"{n:064x}", now - tasks + n, f"task-bench-{n:06d}", 0.0)[:columns - 4]
                            for n in range(tasks)))


def _engine_probe(pack_dir: str, folder: str, tasks: int, reps: int) -> dict[str, object]:
    import gc
    import os
    from pathlib import Path

    os.environ["ZIMAGE_DATA_DIR"] = str(Path(folder) / "data")  # the user's data folder is never touched
    os.environ.pop("ZIMAGE_REUSE_RESULTS", None)
    sys.path.insert(0, pack_dir)
    import importlib

    from zimage_api.emulator import DEMO_KEY, Emulator
    from zimage_api.engine import Engine

    # Either release's API: typed as Any, since the previous release's differs from the one mypy sees.
    clients: Any = importlib.import_module("zimage_api.clients").Clients
    orders: Any = importlib.import_module("zimage_api.orders")
    emu = Emulator().start()
    keys = {"api_keys": {"wavespeed": DEMO_KEY}, "base_urls": {"wavespeed": emu.url}}
    try:
        store: Any = importlib.import_module("zimage_api.store.sqlite").Store  # this release: the clients' store

        def engine(directory: Path) -> Any:
            return Engine(clients(store=store(directory), **keys), budget=None)
    except ImportError:  # 797e917: the clients' ledger, with the receipts beside it
        ledger: Any = importlib.import_module("zimage_api.ledger").Ledger

        def engine(directory: Path) -> Any:
            return Engine(clients(ledger=ledger(directory), **keys))

    order = orders.TextToImage(prompt="a lighthouse at dusk", api="v1/images", width=256, height=256, seed=5)
    runs = {}
    try:
        for label in ("empty", "full"):
            directory = Path(folder) / label
            made = engine(directory)
            if label == "full":
                made.clients.ledger.append("task-bench-setup", status="completed")  # makes the file and schema
                _fill(str(made.clients.ledger.path), tasks)
            first = made.pictures(order)  # paid once, kept as a receipt
            assert first[0].error is None, first[0].error
            runs[label] = made
        sent = len(emu.requests)
        times: dict[str, list[float]] = {"empty": [], "full": []}
        for label in ("full", "empty"):
            runs[label].pictures(order)  # warm-up
        for rep in range(reps):
            for label in (("full", "empty") if rep % 2 == 0 else ("empty", "full")):
                gc.collect()
                started = time.perf_counter()
                outcomes = runs[label].pictures(order)
                times[label].append(time.perf_counter() - started)
                assert outcomes[0].error is None and outcomes[0].value.images, outcomes[0].error
        assert len(emu.requests) == sent, "a run served from its receipt sent a request"
    finally:
        emu.stop()
    return {"full_s": times["full"], "empty_s": times["empty"], "tasks": tasks}


def main(argv: list[str]) -> int:
    if len(argv) in (2, 3) and argv[0] == "import":
        result = _import_probe(argv[1], argv[2] if len(argv) == 3 else None)
    elif len(argv) == 5 and argv[0] == "memory":
        result = _memory_probe(argv[1], argv[2], int(argv[3]), argv[4])
    elif len(argv) == 5 and argv[0] == "engine":
        result = _engine_probe(argv[1], argv[2], int(argv[3]), int(argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
