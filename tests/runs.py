"""One task bought and collected straight through a provider client, as the engine does it without its receipts,
claims and limits: how the client tests drive the protocols end to end."""

from __future__ import annotations

import time
from typing import Any

from zimage_api.logs import prompt_hash
from zimage_api.providers.qingbo_tasks import QingboClient
from zimage_api.providers.wavespeed_v3 import WaveSpeedClient
from zimage_api.results import GenerationResult


def run_task(client: QingboClient | WaveSpeedClient, prompt: str, *, timeout: float = 120.0,
             sleep: Any = time.sleep, clock: Any = time.monotonic, cancel_check: Any = None,
             on_progress: Any = None, **submit_options: Any) -> GenerationResult:
    """Submit one task and collect its picture.

    On Qingbo without a ``cancel_check`` the submit asks Qingbo to hold its answer (``Prefer: wait``, up to 10 s), so
    a quick task comes back finished with no polling at all.
    """
    started = time.monotonic()
    if isinstance(client, QingboClient):
        if "prefer_wait" not in submit_options and cancel_check is None:
            submit_options["prefer_wait"] = max(1, min(10, int(timeout)))
        task = client.submit(prompt, **submit_options)
        result = client.collect(task.task_id, first=task, started=started, timeout=timeout, sleep=sleep,
                                clock=clock, cancel_check=cancel_check, on_progress=on_progress)
        result.prompt_sha256 = prompt_hash(prompt)
        return result
    prediction = client.submit(prompt, **submit_options)
    return client.collect(prediction.id, timeout=timeout, sleep=sleep, clock=clock, cancel_check=cancel_check,
                          on_progress=on_progress, first=prediction, started=started, seed=submit_options.get("seed"),
                          size=(submit_options.get("width", 1024), submit_options.get("height", 1024)))


def run_edit(client: WaveSpeedClient, image: tuple[bytes, str, str], prompt: str, *, strength: float = 0.6,
             **options: Any) -> GenerationResult:
    """Upload the reference, then :func:`run_task` from it (``strength`` is v3's own denoise)."""
    url = client.upload(*image)
    return run_task(client, prompt, image_url=url, strength=strength, **options)
