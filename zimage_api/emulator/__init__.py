"""A local emulator of the two paid image services, for tests, demos and offline work.

It is a real HTTP/1.1 server on 127.0.0.1 that speaks:

* WaveSpeed, OpenAI style: ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits`` (multipart, the
  reference picture in the field ``image``), answering PNG pictures as ``b64_json`` or ``url``;
* WaveSpeed v3: ``POST /api/v3/<model id>`` for every Z-Image model (turbo, base, their -lora models, Turbo
  image-to-image with and without LoRAs, turbo-inpaint and Turbo controlnet), each taking only its own fields,
  ``GET /api/v3/predictions/{id}/result`` and ``POST /api/v3/media/upload/binary``, and the account routes: the
  prediction history ``POST /api/v3/predictions``, ``GET /api/v3/balance`` (and the older
  ``/api/v3/account/balance``) and ``POST /api/v3/model/pricing``;
* Qingbo tasks: ``POST /v1/tasks``, ``GET /v1/tasks/{id}``, ``POST /v1/tasks/{id}/cancel``;
* result files: ``GET /files/{token}.{ext}`` (no key needed), until they expire.

The pictures are deterministic cards showing the prompt and parameters.  Task lifecycles follow an injectable
clock, and faults (rate limits, resets, broken bodies, failed tasks...) can be injected per route::

    from zimage_api.emulator import Emulator, DEMO_KEY

    with Emulator(clock=fake_clock) as emu:
        emu.inject("POST /v1/tasks", "rate_limit", retry_after=2)
        ...  # point the client at emu.url with the key DEMO_KEY

``DEMO_KEY`` is a public, made-up key accepted when no real key is configured; it is not a secret.
"""

from __future__ import annotations

from .faults import FAULT_KINDS
from .pictures import encode, render_card
from .server import DEMO_KEY, Emulator
from .tasks import EmulatedTask
from .wire import RecordedRequest

__all__ = ["Emulator", "DEMO_KEY", "RecordedRequest", "EmulatedTask", "FAULT_KINDS", "render_card", "encode"]
