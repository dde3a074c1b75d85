"""The ComfyUI nodes: Z-Image Generate, Edit, LoRA, Inpaint and ControlNet, Qingbo Task Submit and Qingbo Task Poll.

This module is the only adapter between ComfyUI and :mod:`zimage_api`: it declares the widgets, validates them,
calls the library, reports progress, honours Cancel and turns pictures into IMAGE tensors. It imports and runs
without ComfyUI. ComfyUI's modules are looked up only while a node runs, and the HTTP clients are imported then too,
so loading the pack stays cheap.

What a run needs from outside is one value, a :class:`NodeContext` that every node class holds as ``context``
(tests and scripts give the nodes another one):

* ``hooks``: a :class:`ComfyHooks`; its methods are the progress bar, the status text under the node, the interrupt
  flag and exception, and the user folder. Each is a no-op outside ComfyUI.
* ``clock`` and ``sleep``: the time source and sleep of every wait (a fake clock makes polling instant).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, TypeVar

from .zimage_api.cancel import CancelToken
from .zimage_api.catalog import (
    DEFAULT_TIMEOUT,
    LORA_MAX,
    QINGBO_USD_PER_PICTURE,
    QUOTA_PER_USD,
    V3_MODELS,
    WAVESPEED_USD_PER_PICTURE,
    Api,
    usd,
)
from .zimage_api.errors import TaskCancelledError, ValidationError, ZImageError
from .zimage_api.fields import OUTPUT_FORMAT, RESPONSE_FORMAT, node_inputs, qingbo_seed
from .zimage_api.logs import logger as log
from .zimage_api.orders import (
    MAX_PICTURES,
    ControlNet,
    Edit,
    Inpaint,
    Lora,
    PictureOrder,
    QingboTasks,
    TextToImage,
    check_loras,
    split_events,
)
from .zimage_api.parallel import JobOutcome, first_error
from .zimage_api.progress import BatchProgress
from .zimage_api.results import GenerationResult
from .zimage_api.summary import cost_text, info_json, order_notes, pre_consumed_text, price_text
from .zimage_api.validation import check_task_id, check_timeout, split_task_ids

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "ComfyHooks", "NodeContext"]

T = TypeVar("T")

CATEGORY = "Z-Image"
MAX_EDIT_PICTURES = MAX_PICTURES




# -- ComfyUI services -------------------------------------------------------------------------------------------------


class Interrupted(Exception):
    """Raised on Cancel when ComfyUI is absent (inside ComfyUI its own InterruptProcessingException is used)."""


def _comfy_module(name: str) -> Any | None:
    """A ComfyUI module, or None outside ComfyUI. Only imported when ComfyUI itself is loaded."""
    module = sys.modules.get(name)
    if module is None and "comfy" in sys.modules:
        try:
            module = importlib.import_module(name)
        except Exception:  # a missing or broken module means "no such service here"
            module = None
    return module


class ComfyHooks:
    """The ComfyUI services the nodes use. Every method is a no-op (or a neutral answer) outside ComfyUI."""

    def progress_bar(self, total: int, node_id: str | None) -> Any | None:
        """A ``comfy.utils.ProgressBar`` for ``node_id`` (create it in the node's own thread)."""
        utils = _comfy_module("comfy.utils")
        if utils is None:
            return None
        try:
            return utils.ProgressBar(total, node_id=node_id)
        except TypeError:  # versions before node_id existed
            return utils.ProgressBar(total)

    def send_text(self, text: str, node_id: str | None) -> None:
        """Show ``text`` under the node (``PromptServer.instance.send_progress_text``)."""
        server = _comfy_module("server")
        instance = getattr(getattr(server, "PromptServer", None), "instance", None)
        if node_id is None or instance is None or not hasattr(instance, "send_progress_text"):
            return
        try:
            instance.send_progress_text(text, node_id)
        except Exception as err:  # the status line is cosmetic; never let it fail a paid run
            log.debug("status text not sent: %s", err)

    def interrupted(self) -> bool:
        """Whether the artist pressed Cancel (``comfy.model_management.processing_interrupted``)."""
        mm = _comfy_module("comfy.model_management")
        return bool(mm.processing_interrupted()) if mm is not None else False

    def interrupt_exception(self) -> type[BaseException]:
        """The exception that tells ComfyUI the run was cancelled, not failed."""
        mm = _comfy_module("comfy.model_management")
        return getattr(mm, "InterruptProcessingException", Interrupted) if mm is not None else Interrupted

    def raise_interrupt(self) -> NoReturn:
        """Raise the interrupt, clearing ComfyUI's flag as its own check does."""
        mm = _comfy_module("comfy.model_management")
        if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
            mm.throw_exception_if_processing_interrupted()
        raise self.interrupt_exception()()

    def user_directory(self) -> str | None:
        """ComfyUI's user folder (``folder_paths.get_user_directory()``), or None."""
        folder_paths = _comfy_module("folder_paths")
        getter = getattr(folder_paths, "get_user_directory", None)
        return getter() if getter is not None else None


@dataclass
class NodeContext:
    """What the nodes' runs use from outside: ComfyUI's services, and the clock and sleep of every wait.

    ``store`` is the task store, opened on the first run (in ComfyUI's user folder).
    """

    hooks: ComfyHooks = field(default_factory=ComfyHooks)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    store: Any = None
    funds: Any = None  # the balance readings and quoted prices kept between runs (zimage_api.account.Funds)


def _store(context: NodeContext) -> Any:
    """The task store of the nodes' runs: in ``<ComfyUI>/user/comfyui-zimage`` inside ComfyUI (``$ZIMAGE_DATA_DIR``
    wins), opened once per context and handed to every run."""
    if context.store is None:
        from .zimage_api.store import DATA_DIR_ENV, open_store

        directory = None
        if not os.environ.get(DATA_DIR_ENV, "").strip():
            try:
                user_dir = context.hooks.user_directory()
            except Exception as err:
                log.debug("no ComfyUI user folder: %s", err)
                user_dir = None
            if user_dir:
                directory = os.path.join(user_dir, "comfyui-zimage")
        context.store = open_store(directory)
    return context.store


class _Run:
    """One node execution: its progress bar, status line, Cancel and the side effects handed to the library.

    Created in the node's own thread, which also does every ComfyUI call; worker threads only record progress.
    """

    def __init__(self, context: NodeContext, node_id: str | None, units: int, notes: Sequence[str] = (),
                 start: str = "starting") -> None:
        self.store = _store(context)
        self.context = context
        self.balance: Callable[[], float | None] = lambda: None
        self.hooks = hooks = context.hooks
        self.node_id = node_id
        self.notes = list(notes)
        self.progress = BatchProgress(units)
        self.token = CancelToken(hooks.interrupted)
        self.cost: Callable[[], str | None] = lambda: None
        self.clock = context.clock
        self.sleep = context.sleep
        self.started = self.clock()
        self._drawn_version = -1
        self._drawn_at = 0.0
        self.bar = hooks.progress_bar(100 * len(self.progress), node_id)
        self.show(start)

    # Cancel ----------------------------------------------------------------------------------------------------

    def cancelled(self) -> bool:
        """Whether the artist pressed Cancel: the token handed to the library's waits (safe from any thread)."""
        return self.token.cancelled()

    # Display ---------------------------------------------------------------------------------------------------

    def text(self, state: str) -> str:
        """The status line: state, elapsed time, cost and the account's balance, then any further lines and the
        notes."""
        first, *more = state.split("\n")
        balance = self.balance()
        funds = f"balance {usd(balance, 2)}" if balance is not None else None
        line = " · ".join(part for part in (first, f"{self.clock() - self.started:.1f}s", self.cost(), funds) if part)
        return "\n".join([line, *more, *self.notes])

    def show(self, state: str) -> None:
        self.hooks.send_text(self.text(state), self.node_id)

    def redraw(self) -> None:
        """Bring the progress bar and the status line up to date (in the node's thread only)."""
        version = self.progress.version
        now = time.monotonic()
        if version == self._drawn_version and now - self._drawn_at < 1.0:
            return
        self._drawn_version, self._drawn_at = version, now
        if self.bar is not None:
            total = 100 * len(self.progress)
            try:
                self.bar.update_absolute(min(round(self.progress.total() * 100), total), total)
            except self.hooks.interrupt_exception():
                # ComfyUI's progress hook raises (and clears the flag) on Cancel; the waits still need to know.
                self.token.cancel()
        self.show(self.progress.summary())

    def tick(self) -> None:
        self.cancelled()
        self.redraw()

    # Running ---------------------------------------------------------------------------------------------------

    def engine(self) -> Any:
        """The library's engine for this run: its waits use this run's clock, sleep, Cancel and progress."""
        from .zimage_api.clients import Clients
        from .zimage_api.engine import Engine

        if self.context.funds is None:
            from .zimage_api.account import Funds

            self.context.funds = Funds.new()
        engine = Engine(Clients(store=self.store, sleep=self.sleep), progress=self.progress, token=self.token,
                        on_tick=self.tick, funds=self.context.funds, clock=self.clock, sleep=self.sleep,
                        resume_hint=_resume_hint)
        self.balance = lambda: engine.balance
        return engine

    def drive(self, work: Callable[[Any], list[JobOutcome[T]]]) -> list[JobOutcome[T]]:
        """Run ``work(engine)``; on Cancel raise ComfyUI's interrupt once the waits have stopped."""
        from .zimage_api.engine import RunCancelled

        engine = self.engine()
        try:
            return work(engine)
        except RunCancelled:
            self.show("cancelled")
            self.hooks.raise_interrupt()
        finally:
            engine.clients.close()

    def finish(self, state: str) -> None:
        if self.bar is not None:
            total = 100 * len(self.progress)
            try:
                self.bar.update_absolute(total, total)
            except self.hooks.interrupt_exception():
                pass  # the work is done and paid for: deliver it
        self.show(state)


def _resume_hint(task_id: str, provider: str) -> str:
    """How an artist collects a task later: the same node again finds it in the task store."""
    if provider == "qingbo":
        return f"queue the prompt again to collect it (Qingbo Task Poll with {task_id} collects it too)"
    return "queue the prompt again to collect it, without paying twice"


def _run_pictures(node: _Node, order: PictureOrder, unique_id: str | None,
                  **info: Any) -> tuple[Any, str]:
    """Run a WaveSpeed order: its price and notes on the status line first, then the pictures and their info."""
    run = _Run(node.context, unique_id, order.units, order_notes(order), start=f"starting: {price_text(order)}")
    image, results = _deliver(run, run.drive(lambda engine: engine.pictures(order)))
    where = {"model_id": order.v3_model.id} if order.api == "v3" else {}
    loras = {"loras": [lora.as_json() for lora in order.loras]} if order.loras else {}
    return image, info_json(results, notes=run.notes, api=order.api, **where, **loras,
                            price_usd_each=order.price, **info)


def _to_image(results: Sequence[GenerationResult]) -> Any:
    from .zimage_api.images import bytes_to_tensor

    image, _mask = bytes_to_tensor([picture for result in results for picture in result.images])
    return image


def _deliver(run: _Run, outcomes: Sequence[JobOutcome[GenerationResult]]) -> tuple[Any, list[GenerationResult]]:
    """Raise the first failure, or return the pictures as one IMAGE batch with their results."""
    error = first_error(outcomes)
    if error is not None:
        run.show("failed")
        kept = sum(1 for o in outcomes if o.value is not None)
        if kept and isinstance(error, ZImageError):
            # The pictures bought before the failure are paid and kept: say so, or the artist may think them lost.
            error.message = (f"{error.message} The other {kept} picture(s) of this node were made and are kept: "
                             "queue the prompt again to get them from their receipts, at no cost.")
            error.args = (error.message,)
        raise error
    results = [o.value for o in outcomes if o.value is not None]
    image = _to_image(results)
    state = f"done: {image.shape[0]} picture(s) {image.shape[2]}x{image.shape[1]}"
    reused = sum(1 for r in results if any(n.startswith("served from the local receipt") for n in r.notes))
    if reused:
        state += f"\n{reused} of them from local receipts: no request sent, nothing charged"
    run.finish(state)
    return image, results


def _references(image: Any) -> tuple[Any, ...]:
    """The reference of every picture of an IMAGE batch, encoded for upload as the library does for files."""
    from .zimage_api.images import tensor_to_pil, validate_image_tensor
    from .zimage_api.orders import Reference

    validate_image_tensor(image)
    count = int(image.shape[0]) if image.ndim == 4 else 1
    return tuple(Reference.from_image(tensor_to_pil(image, index)) for index in range(count))


def _masked(image: Any, mask: Any) -> tuple[Any, ...]:
    """Each picture of an IMAGE batch with its mask of a MASK batch (broadcast as core nodes do), encoded."""
    from .zimage_api.images import mask_batch_size, mask_to_pil, tensor_to_pil, validate_image_tensor
    from .zimage_api.orders import MaskedReference, pair_batches

    validate_image_tensor(image)
    images = int(image.shape[0]) if image.ndim == 4 else 1
    pairs = pair_batches(images, mask_batch_size(mask))
    return tuple(MaskedReference.from_images(tensor_to_pil(image, i), mask_to_pil(mask, j)) for i, j in pairs)


def _async_nodes() -> bool:
    """Whether the ComfyUI that loads the pack awaits node coroutines (it runs them side by side).

    Detected from its executor: ComfyUI's ``execution`` module has ``_async_map_node_over_list`` where it does.
    Outside ComfyUI the nodes are coroutines too, for any caller that awaits them.
    """
    execution = sys.modules.get("execution")
    return execution is None or hasattr(execution, "_async_map_node_over_list")


def _node_function(work: Callable[..., T]) -> Callable[..., Any]:
    """The node's FUNCTION: a coroutine that runs ``work`` in a worker thread, or ``work`` itself on a ComfyUI too
    old to await coroutines."""
    if not _async_nodes():
        return work

    @functools.wraps(work)
    async def run(self: Any, *args: Any, **inputs: Any) -> T:
        return await asyncio.to_thread(work, self, *args, **inputs)

    return run


# -- widgets ----------------------------------------------------------------------------------------------------------


_HIDDEN = {"unique_id": "UNIQUE_ID"}


class _Node:
    """What every node shares: its category, and the context its runs use."""

    CATEGORY = CATEGORY
    context: ClassVar[NodeContext] = NodeContext()


class _WaveSpeedNode(_Node):
    """What the two WaveSpeed nodes share: their outputs."""

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")


# -- nodes ------------------------------------------------------------------------------------------------------------


class ZImageGenerate(_WaveSpeedNode):
    """Text to image with Z-Image at WaveSpeed."""

    FUNCTION = "generate"
    OUTPUT_TOOLTIPS = ("The pictures as one batch, in order of their seeds.",
                       "JSON: provider, model, seeds, size, task ids, result URLs and the prompt's hash (no key).")
    DESCRIPTION = ("Text to image with Z-Image at WaveSpeed, over the OpenAI-style /v1/images API or the native v3 "
                   f"API. About {usd(WAVESPEED_USD_PER_PICTURE)} per picture: a count of N makes N paid requests side "
                   "by side; picture i uses seed + i, so every picture can be reproduced alone. The same inputs are "
                   "served from ComfyUI's cache or the pack's local receipts without a new request: change the seed "
                   "to re-roll. Keys come from WAVESPEED_API_KEY or zimage.ini.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {**node_inputs("ZImageGenerate"), "hidden": dict(_HIDDEN)}

    def _generate(self, prompt: str, negative_prompt: str, model: str, api: Api, guidance_scale: float, width: int,
                  height: int, seed: int, count: int, response_format: str = RESPONSE_FORMAT.default,
                  output_format: str = OUTPUT_FORMAT.default, timeout: int = DEFAULT_TIMEOUT,
                  loras: Sequence[Lora] | None = None, unique_id: str | None = None) -> tuple[Any, str]:
        order = TextToImage(prompt=prompt, negative_prompt=negative_prompt, model=model, api=api,
                            guidance_scale=guidance_scale, width=width, height=height, seed=seed, count=count,
                            response_format=response_format, output_format=output_format,
                            timeout=check_timeout(timeout), loras=check_loras(loras))
        return _run_pictures(self, order, unique_id, guidance_scale=order.sent_guidance, count=order.count)

    generate = _node_function(_generate)


class ZImageEdit(_WaveSpeedNode):
    """Image to image with Z-Image at WaveSpeed: every picture of the input batch is edited."""

    FUNCTION = "edit"
    OUTPUT_TOOLTIPS = ("The edited pictures as one batch: for each reference in turn, its count of pictures.",
                       "JSON: provider, model, seeds, size, task ids, result URLs and the prompt's hash (no key).")
    DESCRIPTION = ("Edits each picture of the input batch with Z-Image at WaveSpeed (image to image). About "
                   f"{usd(WAVESPEED_USD_PER_PICTURE)} per picture: references x count paid requests. Each reference "
                   "is resized to at most 1024 pixels on the long side before upload (with the v3 api it is uploaded "
                   "first, then referenced by URL). The output keeps the reference's size unless width and height "
                   "are set. Picture i of each reference uses seed + i. The same inputs are served from ComfyUI's "
                   "cache or the pack's local receipts without a new request: change the seed to re-roll. Keys come "
                   "from WAVESPEED_API_KEY or zimage.ini.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {**node_inputs("ZImageEdit"), "hidden": dict(_HIDDEN)}

    def _edit(self, image: Any, prompt: str, negative_prompt: str, model: str, api: Api, strength: float,
              guidance_scale: float, seed: int, count: int, width: int = 0, height: int = 0,
              response_format: str = RESPONSE_FORMAT.default, output_format: str = OUTPUT_FORMAT.default,
              timeout: int = DEFAULT_TIMEOUT,
              loras: Sequence[Lora] | None = None, unique_id: str | None = None) -> tuple[Any, str]:
        checked = check_loras(loras)  # refused before the references are encoded
        order = Edit(references=_references(image), prompt=prompt, negative_prompt=negative_prompt, model=model,
                     api=api, strength=strength, guidance_scale=guidance_scale, seed=seed, count=count,
                     width=int(width or 0), height=int(height or 0), response_format=response_format,
                     output_format=output_format, timeout=check_timeout(timeout), loras=checked)
        return _run_pictures(self, order, unique_id, strength=order.strength, strength_sent=order.sent_strength,
                             guidance_scale=order.sent_guidance, references=len(order.references),
                             count_per_reference=order.count)

    edit = _node_function(_edit)


class ZImageLoRA(_Node):
    """One LoRA for Z-Image at WaveSpeed, added to the chain it is given."""

    FUNCTION = "chain"
    RETURN_TYPES = ("ZIMAGE_LORAS",)
    RETURN_NAMES = ("loras",)
    OUTPUT_TOOLTIPS = ("The LoRAs so far, in order: connect it to Generate, Edit or another Z-Image LoRA.",)
    DESCRIPTION = (f"Adds a LoRA for Z-Image at WaveSpeed (v3 api) and passes the chain on. Chain up to {LORA_MAX}; "
                   "connect the last one to Z-Image Generate or Edit, which then run the matching -lora model "
                   "(Turbo: turbo-lora or image-to-image-lora; Base: base-lora). The LoRA is loaded by WaveSpeed "
                   "from Hugging Face or a URL: nothing is downloaded here, and nothing is sent until a picture "
                   "node runs.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {**node_inputs("ZImageLoRA"), "hidden": dict(_HIDDEN)}

    def _chain(self, path: str, scale: float, loras: Sequence[Lora] | None = None,
               unique_id: str | None = None) -> tuple[tuple[Lora, ...]]:
        return (check_loras([*check_loras(loras), Lora(path, scale)]),)

    chain = _node_function(_chain)


class ZImageInpaint(_WaveSpeedNode):
    """Inpainting with Z-Image-Turbo at WaveSpeed v3: repaint where the mask is painted."""

    FUNCTION = "inpaint"
    OUTPUT_TOOLTIPS = ("The inpainted pictures as one batch: for each picture and mask in turn, its count.",
                       "JSON: provider, model, seeds, size, task ids, result URLs and the prompt's hash (no key).")
    DESCRIPTION = ("Repaints the painted part of each picture with Z-Image-Turbo at WaveSpeed "
                   "(wavespeed-ai/z-image/turbo-inpaint, "
                   f"{V3_MODELS['wavespeed-ai/z-image/turbo-inpaint'].price_text} per picture). The MASK is 1 where "
                   "you painted (the mask editor, or LoadImage's transparent part): that part is repainted, the rest "
                   "is kept. One mask serves every picture of the batch, or each picture gets its own; a mask of "
                   "another size is scaled to its picture. The picture is resized to at most 1024 pixels on the long "
                   "side for upload, and the mask goes up at exactly that size, white where painted. Keys come from "
                   "WAVESPEED_API_KEY or zimage.ini.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {**node_inputs("ZImageInpaint"), "hidden": dict(_HIDDEN)}

    def _inpaint(self, image: Any, mask: Any, prompt: str, seed: int, count: int, timeout: int = DEFAULT_TIMEOUT,
                 unique_id: str | None = None) -> tuple[Any, str]:
        order = Inpaint(pictures=_masked(image, mask), prompt=prompt, seed=seed, count=count,
                        timeout=check_timeout(timeout))
        return _run_pictures(self, order, unique_id, pictures=len(order.pictures), count_per_picture=order.count,
                             masks_scaled=order.scaled_masks)

    inpaint = _node_function(_inpaint)


class ZImageControlNet(_WaveSpeedNode):
    """Z-Image-Turbo ControlNet at WaveSpeed v3: a picture that follows a control image."""

    FUNCTION = "control"
    OUTPUT_TOOLTIPS = ("The pictures as one batch: for each control image in turn, its count.",
                       "JSON: provider, model, mode, strength, seeds, size, task ids and the prompt's hash (no key).")
    DESCRIPTION = ("Makes pictures with Z-Image-Turbo at WaveSpeed that follow a control image "
                   "(wavespeed-ai/z-image-turbo/controlnet, "
                   f"{V3_MODELS['wavespeed-ai/z-image-turbo/controlnet'].price_text} per picture). With depth, canny "
                   "or pose WaveSpeed turns the control image into that map itself; with none the image already is a "
                   "map, made by a local preprocessor node such as core's Canny. The control image is resized to at "
                   "most 1024 pixels on the long side for upload. Keys come from WAVESPEED_API_KEY or zimage.ini.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {**node_inputs("ZImageControlNet"), "hidden": dict(_HIDDEN)}

    def _control(self, control_image: Any, mode: str, strength: float, prompt: str, width: int, height: int,
                 seed: int, count: int, timeout: int = DEFAULT_TIMEOUT,
                 unique_id: str | None = None) -> tuple[Any, str]:
        order = ControlNet(references=_references(control_image), prompt=prompt, mode=mode, strength=strength,
                           width=int(width or 0), height=int(height or 0), seed=seed, count=count,
                           timeout=check_timeout(timeout))
        return _run_pictures(self, order, unique_id, mode=order.mode, strength=order.strength,
                             strength_sent=order.sent_strength, references=len(order.references),
                             count_per_reference=order.count)

    control = _node_function(_control)


class QingboTaskSubmit(_Node):
    """Queue z-image-turbo tasks at Qingbo and return their ids at once."""

    FUNCTION = "submit"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("task_id",)
    OUTPUT_TOOLTIPS = ("The accepted task ids, one per line. Connect Qingbo Task Poll, or paste them there later.",)
    DESCRIPTION = ("Queues z-image-turbo tasks at Qingbo and returns as soon as they are accepted, one task id per "
                   "line. Qingbo Task Poll collects the pictures; a task id stays collectable after a timeout or a "
                   f"restart, without paying again. About {usd(QINGBO_USD_PER_PICTURE)} per picture "
                   f"({QUOTA_PER_USD:,} quota = 1 USD); prompt_extend costs extra. The same inputs return the same "
                   "task ids without new tasks: change the seed to re-roll. Keys come from QINGBO_API_KEY (or "
                   "WAVE_API_KEY) or zimage.ini.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {**node_inputs("QingboTaskSubmit"), "hidden": dict(_HIDDEN)}

    def _submit(self, prompt: str, aspect_ratio: str, resolution: str, prompt_extend: bool, seed: int, count: int,
                callback_url: str = "", callback_events: str = "", seed_zero_means_random: bool = True,
                unique_id: str | None = None) -> tuple[str]:
        from .zimage_api.engine import submit_error

        order = QingboTasks(prompt=prompt, aspect_ratio=aspect_ratio, resolution=resolution,
                            prompt_extend=prompt_extend,
                            seed=qingbo_seed(seed, zero_means_random=seed_zero_means_random),
                            count=count, callback_url=callback_url, callback_events=split_events(callback_events))
        extra = " + prompt_extend" if prompt_extend else ""
        run = _Run(self.context, unique_id, order.count, start=f"submitting {order.count} task(s) at about "
                                                 f"{usd(QINGBO_USD_PER_PICTURE, exact=True)} each (about "
                                                 f"{usd(QINGBO_USD_PER_PICTURE * order.count, 4)}{extra})")
        accepted: list[Any] = []
        run.cost = lambda: pre_consumed_text(accepted)
        outcomes = run.drive(lambda engine: engine.submit(order))
        tasks = [o.value for o in outcomes if o.value is not None]
        accepted.extend(tasks)
        ids = [task.task_id for task in tasks]
        error = first_error(outcomes)
        if error is not None:
            run.show("failed")
            raise _with_poll_advice(submit_error(error, ids, order.count), ids)
        earlier = sum(1 for task in tasks if task.earlier)
        again = f" ({earlier} submitted earlier with the same inputs: no new task, nothing charged)" if earlier else ""
        run.finish(f"accepted {len(ids)} task(s){again}\n" + "\n".join(ids))
        return ("\n".join(ids),)

    submit = _node_function(_submit)


class QingboTaskPoll(_Node):
    """Wait for Qingbo tasks and return their pictures as one batch."""

    FUNCTION = "poll"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    OUTPUT_TOOLTIPS = ("The pictures of every task id, in order, as one batch.",
                       "JSON: task ids, seeds, size, cost (quota and USD), result URLs and the prompt's hash.")
    DESCRIPTION = ("Waits for Qingbo task ids (linked from Qingbo Task Submit, or pasted, one per line) side by side "
                   "and returns their pictures as one batch. Polling is free and never re-submits: Qingbo bills "
                   f"about {usd(QINGBO_USD_PER_PICTURE)} per finished picture "
                   f"({QUOTA_PER_USD:,} quota = 1 USD), once. A timeout leaves the tasks running, and polling the "
                   "same ids again collects them without paying twice. Finished ids are served from a local copy "
                   "without any request.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {**node_inputs("QingboTaskPoll"), "hidden": dict(_HIDDEN)}

    def _poll(self, task_id: str, timeout: int = DEFAULT_TIMEOUT, unique_id: str | None = None) -> tuple[Any, str]:
        from .zimage_api.engine import collect_error

        ids = [check_task_id(t, provider="Qingbo") for t in split_task_ids(task_id if isinstance(task_id, str) else "")]
        if not ids:
            raise ValidationError("The task_id is empty; link Qingbo Task Submit or paste task ids, one per line.",
                                  field="task_id")
        timeout = check_timeout(timeout)
        run = _Run(self.context, unique_id, len(ids))
        done: list[GenerationResult] = []
        run.cost = lambda: cost_text(done)
        outcomes = run.drive(lambda engine: engine.collect(ids, provider="qingbo", timeout=float(timeout)))
        done.extend(o.value for o in outcomes if o.value is not None)
        error = collect_error(outcomes, ids, timeout)
        if error is not None:
            run.show("failed")
            raise _with_poll_advice(error, ids)
        ordered = [o.value for o in outcomes if o.value is not None]
        local = sum(1 for r in ordered if any(n.startswith("served from the local copy") for n in r.notes))
        notes = ([f"{local} task(s) collected earlier, served from the local copy; no request was sent."]
                 if local else [])
        image = _to_image(ordered)
        info = info_json(ordered, notes=notes)
        run.finish(f"done: {image.shape[0]} picture(s) {image.shape[2]}x{image.shape[1]}")
        return image, info

    poll = _node_function(_poll)


def _with_poll_advice(error: BaseException, ids: Sequence[str]) -> BaseException:
    """The library's error with the node's own advice: where to paste task ids to collect them."""
    from .zimage_api.errors import ZImageError

    if not ids or not isinstance(error, ZImageError) or isinstance(error, (ValidationError, TaskCancelledError)):
        return error
    if "Qingbo Task Poll" in error.message:
        return error
    error.message = f"{error.message} Paste the task ids into Qingbo Task Poll (or queue again) to collect them."
    return error


NODE_CLASS_MAPPINGS = {
    "ZImageGenerate": ZImageGenerate,
    "ZImageEdit": ZImageEdit,
    "ZImageLoRA": ZImageLoRA,
    "ZImageInpaint": ZImageInpaint,
    "ZImageControlNet": ZImageControlNet,
    "QingboTaskSubmit": QingboTaskSubmit,
    "QingboTaskPoll": QingboTaskPoll,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ZImageGenerate": "Z-Image Generate",
    "ZImageEdit": "Z-Image Edit",
    "ZImageLoRA": "Z-Image LoRA",
    "ZImageInpaint": "Z-Image Inpaint",
    "ZImageControlNet": "Z-Image ControlNet",
    "QingboTaskSubmit": "Qingbo Task Submit",
    "QingboTaskPoll": "Qingbo Task Poll",
}
