"""``python -m zimage_api demo --out DIR``: a short tour of the library against an embedded emulator.

It needs no key and charges nothing: an emulator starts in this process on a free port, and every client is pointed
at it through explicit ``base_url``/``api_key`` (the user's environment, config file and ledger are never touched;
the demo keeps its own ledger in ``DIR/.ledger``). It generates a picture (v1/images), edits it, runs a v3
prediction and a Qingbo task, and prints each picture's path, then where they all are. The pictures are the
emulator's placeholder cards (marked "emulator"): the demo shows the whole path (keys, requests, polling, download,
decoding), not what the models draw.

A second run into the same folder first removes the pictures of the run before (listed in ``DIR/.demo-pictures``),
so the folder holds what the last line counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..store.sqlite import Store
from .commands import collect_tasks, generate_pictures, prepare_out
from .runtime import Runtime

__all__ = ["run_demo"]

PROMPT = "a ceramic mug of coffee on a linen table, morning light, film photo"
_LISTING = ".demo-pictures"  # the file names of the last run's pictures, one a line


def _step(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)


def run_demo(out: Path | str) -> list[Path]:
    """Run the tour, writing pictures to ``out``; returns their paths."""
    import requests

    from ..emulator import DEMO_KEY, Emulator

    out = prepare_out(Path(out))
    _remove_previous(out)
    paths: list[Path] = []
    with Emulator(port=0, queue_seconds=0.1, process_seconds=0.3, wavespeed_keys={DEMO_KEY},
                  qingbo_keys={DEMO_KEY}) as emu:
        session = requests.Session()
        session.trust_env = False  # a proxy configured for the internet must not capture 127.0.0.1
        rt = Runtime(ledger=Store(out / ".ledger"), api_keys={"wavespeed": DEMO_KEY, "qingbo": DEMO_KEY},
                     base_urls={"wavespeed": emu.url, "qingbo": emu.url}, session=session)
        _step(f"emulator on {emu.url}: it draws placeholder pictures marked \"emulator\", so the whole path (keys, "
              "requests, polling, download, decoding) can be seen without an account; nothing is charged: each "
              "\"paid\" line says what the same run costs at the real service")
        try:
            _step("1/4 text to image, v1/images: Z-Image-Base, CFG 7.5, seed 42")
            first = generate_pictures(rt, prompt=PROMPT, out=out, cfg=7.5, seed=42, width=1024, height=768)
            paths += first
            _step("2/4 edit of that picture, v1/images: strength 0.5, CFG 6.5")
            paths += generate_pictures(rt, prompt="the same mug, in a snowy winter garden", out=out,
                                       reference=str(first[0]), strength=0.5, cfg=6.5, seed=42)
            _step("3/4 text to image, WaveSpeed v3 prediction (submit, poll, download): Z-Image-Turbo")
            paths += generate_pictures(rt, api="v3", model="Z-Image-Turbo", prompt="a lighthouse at dusk, oil "
                                       "painting", out=out, width=1024, height=1024, seed=7, output_format="jpeg")
            _step("4/4 Qingbo task (z-image-turbo, 16:9): submit, poll, download")
            task = rt.qingbo().submit("a paper boat on a rainy street, watercolor", aspect_ratio="16:9", seed=3)
            paths += collect_tasks(rt, [task.task_id], provider="qingbo", out=out)
        finally:
            rt.close()
            session.close()
    (out / _LISTING).write_text("".join(f"{path.name}\n" for path in paths), encoding="utf-8")
    print(f"Demo done: {len(paths)} placeholder pictures in {out.resolve()} (drawn by the local emulator; nothing "
          f"was charged).", flush=True)
    return paths


def _remove_previous(out: Path) -> None:
    """Delete the pictures the last demo run wrote to ``out`` (only those it listed)."""
    listing = out / _LISTING
    try:
        names = listing.read_text(encoding="utf-8").split()
    except OSError:
        return
    removed = 0
    for name in names:
        path = out / Path(name).name  # a bare name: nothing outside ``out`` is ever removed
        if path.is_file():
            path.unlink()
            removed += 1
    listing.unlink()
    if removed:
        _step(f"removed the {removed} pictures of the previous demo run in {out}")
