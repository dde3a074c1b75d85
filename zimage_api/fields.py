"""Every input an artist gives, once: its name, type, range, default, help, choices, and which routes take it.

The nodes' widgets (:func:`node_inputs`), the command line's options (:func:`add_flags`) and a batch file's columns
(:data:`BATCH_COLUMNS`, :func:`column_named`) are all made from this table, so a range, a default or a choice list
cannot differ between entry points. Where one input has another default or help on one node (the CFG of an edit, the
size of an edit), the table holds that variant too, made with :meth:`Field.but` from the same field.

Seeds mean the same on every node: -1 is random, anything else a fixed seed. Qingbo Task Submit also read 0 as random
before; its last input, ``seed_zero_means_random``, keeps that meaning for the workflows saved then (see
:func:`qingbo_seed`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from .catalog import (
    APIS,
    ASPECT_RATIOS,
    CONTROL_MODES,
    COUNT_MAX,
    DEFAULT_TIMEOUT,
    LORA_MAX,
    LORA_SCALE_MAX,
    MODELS,
    QINGBO_PROMPT_LIMIT,
    RANDOM_SEED,
    RESOLUTIONS,
    RESPONSE_FORMATS,
    ROUTES,
    SEED_MAX,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    V3_OUTPUT_FORMATS,
    Route,
)
from .validation import IMAGES_SIZE, V3_SIZE, check_choice, check_number

__all__ = ["Field", "Kind", "NODE_INPUTS", "node_inputs", "COMMAND_FLAGS", "add_flags", "BATCH_COLUMNS",
           "BATCH_FLAGS", "column_named", "columns_for", "qingbo_seed", "SIZE_STEP", "DEFAULT_PROMPT",
           "DEFAULT_INPAINT_PROMPT", "DEFAULT_NEGATIVE", "PROMPT", "NEGATIVE", "MODEL", "API", "GUIDANCE",
           "EDIT_GUIDANCE", "WIDTH", "HEIGHT", "SEED", "COUNT", "RESPONSE_FORMAT", "OUTPUT_FORMAT", "TIMEOUT",
           "STRENGTH", "CONTROL_STRENGTH", "MODE", "ASPECT_RATIO", "RESOLUTION", "PROMPT_EXTEND",
           "SEED_ZERO_MEANS_RANDOM"]

Kind = Literal["STRING", "INT", "FLOAT", "BOOLEAN", "COMBO", "IMAGE", "MASK", "ZIMAGE_LORAS"]

SIZE_STEP = 16  # pixels: sizes are multiples of it
WAVESPEED: tuple[Route, ...] = ("wavespeed-images", "wavespeed-v3")

DEFAULT_PROMPT = ("Editorial-style product photo of a ceramic mug on a linen table, soft morning light. 35mm look, "
                  "neutral color grading, no text, uncluttered background.")
DEFAULT_INPAINT_PROMPT = "A small potted plant on the table, soft morning light, matching the rest of the photo."
DEFAULT_NEGATIVE = "no text, no watermark, no extra hands, no extra limbs, no logo, no signature, no border"


@dataclass(frozen=True)
class Field:
    """One input. ``default`` is the library's default (and the widget's unless a variant says otherwise).

    ``flag`` is the command line's option (None: none), ``column`` the batch file's column (None: none) with its
    other spellings in ``aliases``; ``routes`` are the routes that take the input, and a batch row that has the
    column with no provider goes to ``implies``. A choice with ``any_case`` is read in any case.
    """

    name: str
    kind: Kind
    help: str = ""
    default: Any = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    multiline: bool = False
    seed: bool = False
    flag: str | None = None
    flag_help: str = ""
    metavar: str | None = None
    column: str | None = None
    aliases: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ROUTES
    implies: Route | None = None
    any_case: bool = False

    def but(self, **changes: Any) -> Field:
        """This field with another default, help or range (one node's variant)."""
        return replace(self, **changes)

    def widget(self) -> tuple[Any, dict[str, Any]]:
        """The ComfyUI declaration: ``(type or choices, options)``."""
        options: dict[str, Any] = {}
        if self.multiline:
            options["multiline"] = True
        if self.default is not None:
            options["default"] = self.default
        for key, value in (("min", self.low), ("max", self.high), ("step", self.step)):
            if value is not None:
                options[key] = value
        if self.seed:
            options["control_after_generate"] = True
        options["tooltip"] = self.help
        return (list(self.choices) if self.kind == "COMBO" else self.kind), options

    def takes(self, route: Route) -> bool:
        return route in self.routes

    def check(self, value: Any) -> Any:
        """The value within this field's range or choices (a :class:`ValidationError` naming the field)."""
        if self.kind == "COMBO":
            return check_choice(value, self.name, self.choices, case_insensitive=self.any_case)
        if self.kind in ("INT", "FLOAT") and self.low is not None and self.high is not None:
            return check_number(value, self.name, self.low, self.high)
        return value

    def default_text(self) -> str:
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


def _sizes(name: str) -> str:
    return (f"Picture {name} in pixels: {IMAGES_SIZE.min_side}-{IMAGES_SIZE.max_side} with v1/images, "
            f"{V3_SIZE.min_side}-{V3_SIZE.max_side} with v3.")


# -- the table ---------------------------------------------------------------------------------------------------------

PROMPT = Field("prompt", "STRING", "What to picture. Say subject, setting, light and style.", DEFAULT_PROMPT,
               multiline=True, column="prompt")
NEGATIVE = Field("negative_prompt", "STRING", "What to keep out of the picture (Z-Image-Base only).", "",
                 multiline=True, flag="--negative", metavar="TEXT", flag_help="negative prompt: what to avoid",
                 column="negative_prompt", aliases=("negative",), routes=WAVESPEED)
MODEL = Field("model", "COMBO", "Z-Image-Base follows CFG and the negative prompt. Z-Image-Turbo is distilled to 8 "
              "steps: faster, but CFG and the negative prompt have no effect.", MODELS[0], choices=MODELS,
              flag="--model", flag_help=f"the model (default: {MODELS[0]}; {MODELS[1]} with --mask or --control; "
              "Turbo ignores CFG and negative prompt)", column="model")
API = Field("api", "COMBO", f"v1/images: WaveSpeed's OpenAI-style API (sizes {IMAGES_SIZE.min_side}-"
            f"{IMAGES_SIZE.max_side}, answers at once). v3: WaveSpeed's native prediction API (sizes "
            f"{V3_SIZE.min_side}-{V3_SIZE.max_side}, polled with progress, no CFG).", APIS[0], choices=APIS,
            flag="--api", flag_help="WaveSpeed protocol: the OpenAI-style v1/images (synchronous) or the native v3 "
            f"predictions (submit + poll, recorded in the ledger) (default: {APIS[0]}; v3 with --lora, --mask or "
            "--control)", routes=WAVESPEED)
GUIDANCE = Field("guidance_scale", "FLOAT", "CFG: how strictly the prompt is followed. 7-8 is dependable, 9+ gets "
                 "brittle. Not sent with the v3 api; no effect on Z-Image-Turbo.", 7.5, 0.0, 20.0, 0.1,
                 flag="--cfg", metavar="SCALE", flag_help="guidance scale {low:g}-{high:g}, v1/images only "
                 "(default: {default}; 7-8 is dependable)", column="cfg", aliases=("guidance_scale",),
                 routes=("wavespeed-images",))
EDIT_GUIDANCE = GUIDANCE.but(default=6.5, help="CFG: 6-7 works best with a reference. Not sent with the v3 api; no "
                             "effect on Z-Image-Turbo.", flag_help="guidance scale {low:g}-{high:g}, v1/images only "
                             "(default: {default}; 6-7 is dependable with a reference)")
WIDTH = Field("width", "INT", _sizes("width"), 1024, IMAGES_SIZE.min_side, IMAGES_SIZE.max_side, SIZE_STEP,
              flag="--width", metavar="PX", flag_help=f"picture width: {IMAGES_SIZE.min_side}-{IMAGES_SIZE.max_side} "
              f"on v1/images (area up to {IMAGES_SIZE.max_side}x{IMAGES_SIZE.max_side}), {V3_SIZE.min_side}-"
              f"{V3_SIZE.max_side} on v3 (default: {{default}})", column="width", routes=WAVESPEED)
HEIGHT = WIDTH.but(name="height", help=_sizes("height"), flag="--height",
                   flag_help="picture height (see --width)", column="height")
SIZE = Field("size", "STRING", "Width and height as one value, such as 1024x768.", column="size", routes=WAVESPEED)
SEED = Field("seed", "INT", "The seed of the first picture; picture i of the count uses seed + i. A new seed is the "
             f"deliberate re-roll. {RANDOM_SEED} = random.", 0, RANDOM_SEED, SEED_MAX, seed=True, flag="--seed",
             metavar="N", flag_help=f"fixed seed for a reproducible picture; {RANDOM_SEED} or omitted = random. With "
             "--count, the pictures use N, N+1, ...", column="seed")
COUNT = Field("count", "INT", "How many pictures (one paid request each; at most 2 WaveSpeed requests in flight at "
              "once, unless ZIMAGE_WAVESPEED_CONCURRENCY raises it).", 1, 1, COUNT_MAX, 1,
              flag="--count", metavar="N", flag_help=f"how many pictures, 1-{COUNT_MAX}: N separate paid requests, "
              "picture i with seed + i (default: {default})")
RESPONSE_FORMAT = Field("response_format", "COMBO", "How the pictures come back: inline base64, or short-lived URLs "
                        "that are downloaded at once. The result is the same.", RESPONSE_FORMATS[0],
                        choices=RESPONSE_FORMATS, flag="--response-format", flag_help="how pictures travel: inline "
                        "base64 or a URL downloaded at once (default: {default} on v1/images, url on v3)",
                        column="response_format", routes=WAVESPEED)
OUTPUT_FORMAT = Field("output_format", "COMBO", "The file format WaveSpeed encodes (v3 api only; v1/images always "
                      "returns PNG).", V3_OUTPUT_FORMATS[0], choices=V3_OUTPUT_FORMATS, flag="--output-format",
                      flag_help="picture format, v3 only (default: {default})", column="output_format",
                      routes=("wavespeed-v3",))
TIMEOUT = Field("timeout", "INT", "Seconds to wait for the pictures, retries included. v1/images: the request. v3: "
                "upload, submit and polling; a prediction still running then is kept, and queueing again collects "
                "it.", DEFAULT_TIMEOUT, TIMEOUT_MIN, TIMEOUT_MAX, 1)
V3_TIMEOUT = TIMEOUT.but(help="Seconds to wait for the pictures, retries included: upload, submit and polling. A "
                         "prediction still running then keeps running; queue again to collect it without paying "
                         "twice.")
LORAS = Field("loras", "ZIMAGE_LORAS", "LoRAs from Z-Image LoRA nodes (v3 api only): with them the -lora model of "
              "the chosen model runs.", flag="--lora", metavar="PATH:SCALE", flag_help="a LoRA (v3): a Hugging Face "
              f"repo id owner/name or an https .safetensors URL, with its scale 0-{LORA_SCALE_MAX:g} after a colon "
              f"(default 1); repeat for up to {LORA_MAX}. Runs the -lora model", column="loras", aliases=("lora",),
              routes=("wavespeed-v3",), implies="wavespeed-v3")
IMAGE = Field("image", "IMAGE", "The reference picture(s). Every picture of the batch is edited.", column="reference",
              aliases=("image",), routes=WAVESPEED)
STRENGTH = Field("strength", "FLOAT", "How closely to follow the reference, the same on both apis: 0.25-0.35 a light "
                 "touch (keeps palette and mood), 0.45-0.6 solid adherence (composition stays close), 0.7+ a near "
                 "copy. v1/images gets this value; v3, which takes the denoise, gets 1 - strength.", 0.5, 0.0, 1.0,
                 0.01, flag="--strength", metavar="S", flag_help="how closely to follow the reference, {low:g}-"
                 "{high:g}, the same on both apis: 0.25-0.35 a light touch, 0.45-0.6 solid, 0.7+ near copy (default: "
                 "{default}). v3 is sent the denoise 1 - S", column="strength", routes=WAVESPEED)
CONTROL_STRENGTH = STRENGTH.but(default=1.0, help="How strictly the control is followed: 1 strictly, lower gives the "
                                "prompt more room. Sent as it is.", flag_help="with --control: how strictly the "
                                "control is followed, {low:g}-{high:g} (default: {default})")
MASK = Field("mask", "MASK", "Where to repaint: 1 (painted) is repainted, 0 is kept. Paint it in the mask editor of "
             "LoadImage, or use its alpha.", flag="--mask", metavar="FILE", flag_help="inpaint (v3, Z-Image-Turbo): "
             "a black and white picture, white where the reference is repainted; scaled to the reference if its size "
             "differs", column="mask", aliases=("mask_image",), routes=("wavespeed-v3",), implies="wavespeed-v3")
CONTROL_IMAGE = Field("control_image", "IMAGE", "The control source: a photo for depth/canny/pose, or a ready control "
                      "map for none. Every picture of the batch is used.", flag="--control", metavar="FILE",
                      flag_help="ControlNet (v3, Z-Image-Turbo): the control picture the result follows",
                      column="control", aliases=("control_image",), routes=("wavespeed-v3",), implies="wavespeed-v3")
MODE = Field("mode", "COMBO", "depth, canny, pose: WaveSpeed makes that map from the control image. none: the control "
             "image already is a map made by a local preprocessor node (core's Canny, for example).", CONTROL_MODES[0],
             choices=CONTROL_MODES, flag="--mode", flag_help="with --control: the map WaveSpeed makes of it, or none "
             "when FILE already is a control map (default: {default})", column="mode", routes=("wavespeed-v3",),
             implies="wavespeed-v3")
ASPECT_RATIO = Field("aspect_ratio", "COMBO", "The picture's shape. 1K makes the long side 1024 pixels, 2K makes it "
                     "2048.", ASPECT_RATIOS[0], choices=ASPECT_RATIOS, flag="--aspect-ratio",
                     flag_help="picture shape (default: {default})", column="aspect_ratio", routes=("qingbo",))
RESOLUTION = Field("resolution", "COMBO", "1K: long side 1024 pixels; 2K: long side 2048 pixels.", RESOLUTIONS[0],
                   choices=RESOLUTIONS, any_case=True, flag="--resolution",
                   flag_help="1K = 1024 px or 2K = 2048 px on the long side (default: {default})",
                   column="resolution", routes=("qingbo",))
PROMPT_EXTEND = Field("prompt_extend", "BOOLEAN", "Let Qingbo rewrite the prompt into a longer one first (costs "
                      "extra).", False, flag="--prompt-extend", flag_help="let Qingbo expand the prompt (adds an "
                      "extra cost that Qingbo does not publish)", column="prompt_extend", routes=("qingbo",))
SEED_ZERO_MEANS_RANDOM = Field("seed_zero_means_random", "BOOLEAN", "On: seed 0 is random too, as in workflows "
                               f"saved before this input existed. Off: 0 is a fixed seed as on every node, and only "
                               f"{RANDOM_SEED} is random.", True, routes=("qingbo",))
CALLBACK_URL = Field("callback_url", "STRING", "Advanced, for server deployments: a URL where Qingbo posts task "
                     "events. Leave empty in a desktop ComfyUI.", "", routes=("qingbo",))
CALLBACK_EVENTS = Field("callback_events", "STRING", "Advanced: comma-separated event names for callback_url. Sent "
                        "only when set.", "", routes=("qingbo",))
TASK_ID = Field("task_id", "STRING", "Task ids from Qingbo Task Submit: link its output, or paste ids (one per line) "
                "to recover earlier results.", "", multiline=True, routes=("qingbo",))
PROVIDER = Field("provider", "COMBO", "Where the row goes: a provider with its api.", ROUTES[0], choices=ROUTES,
                 flag="--provider", flag_help="the provider of rows that name none (default: {default})",
                 column="provider")
LORA_PATH = Field("path", "STRING", "A Hugging Face repo id (owner/name) or an https URL of a .safetensors file.", "",
                  routes=("wavespeed-v3",))
LORA_SCALE = Field("scale", "FLOAT", f"How strongly the LoRA acts, 0-{LORA_SCALE_MAX:g} (1 = as trained).", 1.0,
                   0.0, LORA_SCALE_MAX, 0.05, routes=("wavespeed-v3",))

_EDIT_SIZE = ("Output {} in pixels; 0 = the reference's size, fitted to the api's limits "
              f"({IMAGES_SIZE.min_side}-{IMAGES_SIZE.max_side} for v1/images, {V3_SIZE.min_side}-{V3_SIZE.max_side} "
              f"for v3) and rounded to a multiple of {SIZE_STEP}.")
_CONTROL_SIZE = (f"Output {{}} in pixels; 0 = the control image's size, fitted to {V3_SIZE.min_side}-"
                 f"{V3_SIZE.max_side} and rounded to a multiple of {SIZE_STEP}.")
_EDIT_WIDTH = WIDTH.but(default=0, low=0, help=_EDIT_SIZE.format("width"),
                        flag_help=WIDTH.flag_help.replace("{default}", "the reference's size"))
_EDIT_HEIGHT = HEIGHT.but(default=0, low=0, help=_EDIT_SIZE.format("height"))

NODE_INPUTS: dict[str, dict[str, tuple[Field, ...]]] = {
    "ZImageGenerate": {
        "required": (PROMPT, NEGATIVE.but(default=DEFAULT_NEGATIVE), MODEL, API, GUIDANCE, WIDTH, HEIGHT, SEED, COUNT),
        "optional": (RESPONSE_FORMAT, OUTPUT_FORMAT, TIMEOUT, LORAS),
    },
    "ZImageEdit": {
        "required": (IMAGE, PROMPT.but(help="What the edited picture should show."),
                     NEGATIVE.but(default=DEFAULT_NEGATIVE), MODEL, API, STRENGTH, EDIT_GUIDANCE,
                     SEED.but(help="The seed of each reference's first picture; picture i uses seed + i. "
                              f"{RANDOM_SEED} = random."),
                     COUNT.but(help="How many pictures per reference picture (one paid request each).")),
        "optional": (_EDIT_WIDTH, _EDIT_HEIGHT, RESPONSE_FORMAT, OUTPUT_FORMAT, TIMEOUT, LORAS),
    },
    "ZImageLoRA": {
        "required": (LORA_PATH, LORA_SCALE),
        "optional": (LORAS.but(help="An earlier Z-Image LoRA to chain from (this one comes after it)."),),
    },
    "ZImageInpaint": {
        "required": (IMAGE.but(help="The picture(s) to inpaint."), MASK,
                     PROMPT.but(default=DEFAULT_INPAINT_PROMPT, help="What the painted part should show."),
                     SEED.but(help="The seed of each picture's first result; result i uses seed + i. "
                              f"{RANDOM_SEED} = random."),
                     COUNT.but(help="How many results per picture (one paid request each).")),
        "optional": (V3_TIMEOUT,),
    },
    "ZImageControlNet": {
        "required": (CONTROL_IMAGE, MODE, CONTROL_STRENGTH,
                     PROMPT.but(help="What to picture, in the shape of the control."),
                     _EDIT_WIDTH.but(high=V3_SIZE.max_side, help=_CONTROL_SIZE.format("width")),
                     _EDIT_HEIGHT.but(high=V3_SIZE.max_side, help=_CONTROL_SIZE.format("height")),
                     SEED.but(help="The seed of each control image's first picture; picture i uses seed + i. "
                              f"{RANDOM_SEED} = random."),
                     COUNT.but(help="How many pictures per control image (one paid request each).")),
        "optional": (V3_TIMEOUT,),
    },
    "QingboTaskSubmit": {
        "required": (PROMPT.but(help=f"What to picture; at most {QINGBO_PROMPT_LIMIT} characters (checked before "
                                "anything is sent)."), ASPECT_RATIO, RESOLUTION, PROMPT_EXTEND,
                     SEED.but(help=f"{RANDOM_SEED} = random (no seed is sent); 0 too while seed_zero_means_random "
                              "is on. Otherwise task i of the count uses seed + i."),
                     COUNT.but(help="How many tasks to queue (one picture and one charge each).")),
        "optional": (CALLBACK_URL, CALLBACK_EVENTS, SEED_ZERO_MEANS_RANDOM),
    },
    "QingboTaskPoll": {
        "required": (TASK_ID, TIMEOUT.but(help="Seconds to wait for all tasks. On timeout the tasks keep running; "
                                          "queue again to collect them.")),
    },
}
"""Each node's inputs, in widget order (saved workflows hold widget values by position: append, never reorder)."""


def node_inputs(node: str) -> dict[str, dict[str, tuple[Any, dict[str, Any]]]]:
    """The ``required`` and ``optional`` sections of a node's ``INPUT_TYPES``."""
    return {section: {f.name: f.widget() for f in fields} for section, fields in NODE_INPUTS[node].items()}


def qingbo_seed(seed: int, *, zero_means_random: bool) -> int | None:
    """The seed Qingbo Task Submit sends: None (random: no seed is sent) for -1, and for 0 while
    ``zero_means_random`` (the meaning of 0 in workflows saved before that input existed); else the seed itself."""
    if seed == RANDOM_SEED or (seed == 0 and zero_means_random):
        return None
    return seed  # checked by the order


# -- the command line -------------------------------------------------------------------------------------------------

_GENERATE_FLAGS = (API, MODEL, LORAS, NEGATIVE, GUIDANCE, CONTROL_IMAGE, MODE, CONTROL_STRENGTH, WIDTH, HEIGHT, SEED,
                   COUNT, RESPONSE_FORMAT, OUTPUT_FORMAT)
COMMAND_FLAGS: dict[str, tuple[Field, ...]] = {
    "generate": _GENERATE_FLAGS,
    "edit": (API, MODEL, LORAS, NEGATIVE, EDIT_GUIDANCE, STRENGTH, MASK, _EDIT_WIDTH, HEIGHT, SEED, COUNT,
             RESPONSE_FORMAT, OUTPUT_FORMAT),
    "submit": (ASPECT_RATIO, RESOLUTION, PROMPT_EXTEND,
               SEED.but(flag_help="fixed seed (sent only when set); with --count the tasks use N, N+1, ..."),
               COUNT.but(flag_help=f"how many tasks, 1-{COUNT_MAX} (default: {{default}})")),
}
"""The options of each picture command, in ``--help`` order."""

BATCH_FLAGS = (PROVIDER, RESPONSE_FORMAT.but(flag_help="default response_format of wavespeed-images rows (default: "
                                                       "{default})"),
               OUTPUT_FORMAT.but(flag_help="default output_format of wavespeed-v3 rows (default: {default})"))
"""The batch command's options that give a default to rows."""


def add_flags(parser: argparse.ArgumentParser, fields: Iterable[Field], *,
              parsers: Mapping[str, Callable[[str], Any]] | None = None, use_defaults: Iterable[str] = ()) -> None:
    """Add each field's option to ``parser``: its type and choices from the field, its help with the field's default
    and range. The parsed value is None when the option is not given, unless the field is in ``use_defaults``.
    ``parsers`` gives the text parser of a field (by name) where the field's kind is not enough."""
    parsers = dict(parsers or {})
    defaults = set(use_defaults)
    for f in fields:
        assert f.flag is not None, f.name
        help_text = f.flag_help.format(default=f.default_text(), low=f.low or 0, high=f.high or 0)
        default = f.default if f.name in defaults else None
        if f.kind == "BOOLEAN":
            parser.add_argument(f.flag, action="store_true", help=help_text)
        elif f.kind == "COMBO":
            parser.add_argument(f.flag, choices=f.choices, default=default, help=help_text,
                                type=parsers.get(f.name, str))
        elif f.name == "loras":
            parser.add_argument(f.flag, metavar=f.metavar, type=parsers["loras"], action="append", default=None,
                                help=help_text)
        else:
            kind = parsers.get(f.name) or {"INT": int, "FLOAT": float}.get(f.kind, str)
            parser.add_argument(f.flag, metavar=f.metavar, type=kind, default=default, help=help_text)


# -- a batch file's columns -------------------------------------------------------------------------------------------

BATCH_COLUMNS: tuple[Field, ...] = (
    PROMPT, NEGATIVE, WIDTH, HEIGHT, SIZE, SEED, PROVIDER, IMAGE, GUIDANCE, STRENGTH, ASPECT_RATIO, RESOLUTION,
    PROMPT_EXTEND, MODEL, RESPONSE_FORMAT, OUTPUT_FORMAT, LORAS, MASK, CONTROL_IMAGE, MODE)
"""The columns of a batch file, in the order its messages list them."""

_BY_COLUMN = {f.column: f for f in BATCH_COLUMNS if f.column}
_BY_ALIAS = {alias: f for f in BATCH_COLUMNS for alias in f.aliases}


def column_named(name: str) -> Field | None:
    """The batch column that a header (any case, or another spelling) names, or None."""
    key = name.strip().lower()
    return _BY_COLUMN.get(key) or _BY_ALIAS.get(key)


def columns_for(route: Route) -> tuple[str, ...]:
    """The columns a row of ``route`` may have (beside provider and model, which every row may name)."""
    return tuple(f.column for f in BATCH_COLUMNS if f.column and f.takes(route) and f not in (PROVIDER, MODEL))
