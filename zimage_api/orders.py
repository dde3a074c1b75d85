"""What the artist asks for, checked once: the request values that every entry point hands to the engine.

A node, a CLI command and a batch row turn their own inputs into one of these values; the engine plans it into paid
units. Equal values give equal requests, whichever entry point built them. Every check runs here, before anything is
sent or uploaded.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Union

from .catalog import (
    DEFAULT_TIMEOUT,
    LORA_MAX,
    QINGBO_PROMPT_LIMIT,
    RANDOM_SEED,
    SEED_MAX,
    WAVESPEED_PROMPT_LIMIT,
    WAVESPEED_USD_PER_PICTURE,
    Api,
    Route,
    V3Model,
    route_of,
    usd,
    v3_model_for,
)
from .errors import ValidationError
from .fields import (
    API,
    ASPECT_RATIO,
    CONTROL_STRENGTH,
    EDIT_GUIDANCE,
    GUIDANCE,
    HEIGHT,
    LORA_SCALE,
    MODE,
    MODEL,
    OUTPUT_FORMAT,
    RESOLUTION,
    RESPONSE_FORMAT,
    STRENGTH,
    WIDTH,
)
from .sizes import check_size_for, size_from_reference, size_limits
from .validation import (
    check_count,
    check_lora_path,
    check_number,
    check_prompt,
    check_seed_range,
    check_text_length,
)

if TYPE_CHECKING:
    from PIL import Image


__all__ = ["Reference", "MaskedReference", "Lora", "TextToImage", "Edit", "Inpaint", "ControlNet", "QingboTasks",
           "PictureOrder", "Order", "MAX_PICTURES", "fingerprint", "parse_lora", "random_seed", "check_loras",
           "pair_batches"]

MAX_PICTURES = 64  # paid pictures per order: a guard against paying for a huge batch by mistake
REFERENCE_MAX_SIDE = 1024  # the seed guide: resize references to 1024 on the long side before upload


def fingerprint(kind: str, **params: object) -> str:
    """A stable id of a request: its kind and every parameter that changes the picture (never the key)."""
    canonical = json.dumps({"kind": kind, **params}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def random_seed(count: int = 1) -> int:
    """A seed for an order that gave none: drawn here, so that every picture still has a seed to reproduce it;
    ``count`` pictures from it (seed .. seed + count - 1) all stay within 0-SEED_MAX."""
    return secrets.randbelow(SEED_MAX - max(count, 1) + 2)


@dataclass(frozen=True)
class Reference:
    """One reference picture, encoded for upload once (at most 1024 pixels on the long side, PNG).

    ``size`` is the picture's own size before that resize: an edit's output size follows it.
    """

    upload: tuple[bytes, str, str]  # (data, filename, content_type)
    size: tuple[int, int]

    @property
    def digest(self) -> str:
        """The upload's sha256 prefix: a receipt matches only the same reference."""
        return hashlib.sha256(self.upload[0]).hexdigest()[:32]

    @classmethod
    def from_image(cls, image: Image.Image) -> Reference:
        """The reference of a PIL picture (turned upright by its EXIF orientation first)."""
        from PIL import ImageOps

        from .images import prepare_upload

        upright = ImageOps.exif_transpose(image) or image
        return cls(prepare_upload(upright, max_side=REFERENCE_MAX_SIDE), upright.size)


@dataclass(frozen=True)
class MaskedReference:
    """A picture to inpaint and its mask, both encoded for upload: the mask is a PNG at exactly the uploaded
    picture's size, white where the artist painted (repaint) and black elsewhere (keep).

    ``scaled`` is True when the mask came at another size than its picture and was scaled to it.
    """

    reference: Reference
    mask: tuple[bytes, str, str]
    scaled: bool = False

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.mask[0]).hexdigest()[:32]

    @classmethod
    def from_images(cls, image: Image.Image, mask: Image.Image) -> MaskedReference:
        """Pair a PIL picture with a mask picture (mode L, 255 where painted; other modes by their luminance)."""
        import io

        from PIL import Image as PILImage
        from PIL import ImageOps

        upright = ImageOps.exif_transpose(image) or image
        reference = Reference.from_image(upright)
        with PILImage.open(io.BytesIO(reference.upload[0])) as uploaded:
            size = uploaded.size
        painted = mask if mask.mode == "L" else mask.convert("L")
        scaled = painted.size != upright.size
        if painted.size != size:
            painted = painted.resize(size, PILImage.Resampling.BILINEAR)
        binary = painted.point(lambda value: 255 if value >= 128 else 0)
        if binary.getbbox() is None:
            raise ValidationError("The mask is empty: nothing is painted, so the picture would be paid for unchanged; "
                                  "paint the area to repaint (in ComfyUI: right-click LoadImage, Open in MaskEditor) "
                                  "and run again. Nothing was sent.", field="mask")
        buffer = io.BytesIO()
        binary.save(buffer, format="PNG", compress_level=1)
        return cls(reference, (buffer.getvalue(), "mask.png", "image/png"), scaled)


def pair_batches(images: int, masks: int) -> list[tuple[int, int]]:
    """Which picture goes with which mask, broadcast as ComfyUI's core nodes do: one mask for every picture, one
    picture for every mask, or one each."""
    if images < 1 or masks < 1:
        raise ValidationError("Inpainting needs at least one picture and one mask.", field="mask")
    if images == masks:
        return [(i, i) for i in range(images)]
    if masks == 1:
        return [(i, 0) for i in range(images)]
    if images == 1:
        return [(0, j) for j in range(masks)]
    raise ValidationError(f"The image batch has {images} pictures and the mask batch {masks} masks; give one mask "
                          "for all pictures, or one mask per picture.", field="mask")


@dataclass(frozen=True)
class Lora:
    """One LoRA for the -lora models: a Hugging Face repo id (``owner/name``) or an https ``.safetensors`` URL,
    with its scale 0-4."""

    path: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", check_lora_path(self.path))
        object.__setattr__(self, "scale", check_number(self.scale, "LoRA scale", LORA_SCALE.low or 0.0,
                                                       LORA_SCALE.high or 0.0))

    def as_json(self) -> dict[str, object]:
        """The item as the v3 ``loras`` array holds it."""
        return {"path": self.path, "scale": self.scale}


def parse_lora(text: str) -> tuple[str, float]:
    """``PATH:SCALE`` (or just ``PATH``, scale 1); the path may be an https URL, so the scale is after the last ':'."""
    path, sep, tail = text.rpartition(":")
    if sep:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return text, 1.0


def check_loras(loras: object) -> tuple[Lora, ...]:
    """LoRAs from :class:`Lora` values, ``{"path", "scale"}`` mappings or ``(path, scale)`` pairs; at most 3."""
    if loras is None:
        return ()
    if not isinstance(loras, (list, tuple)):
        raise ValidationError("The loras must be a list of LoRAs (connect Z-Image LoRA nodes).", field="loras")
    items: list[Lora] = []
    for item in loras:
        if isinstance(item, Lora):
            items.append(item)
        elif isinstance(item, dict):
            items.append(Lora(item.get("path"), item.get("scale", 1.0)))  # type: ignore[arg-type]
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            items.append(Lora(item[0], item[1]))
        else:
            raise ValidationError(f"A LoRA must have a path and a scale, not {item!r}.", field="loras")
    if len(items) > LORA_MAX:
        raise ValidationError(f"{len(items)} LoRAs are chained; WaveSpeed takes at most {LORA_MAX} per picture. "
                              "Remove a Z-Image LoRA node.", field="loras")
    return tuple(items)


@dataclass(frozen=True)
class TextToImage:
    """Text to image at WaveSpeed: ``count`` pictures, picture *i* with ``seed + i``, one paid request each.

    A seed of -1 (:data:`~zimage_api.catalog.RANDOM_SEED`) draws one here, as every node's random seed does.
    Every default is the field table's (:mod:`zimage_api.fields`).
    """

    prompt: str
    negative_prompt: str = ""
    model: str = MODEL.default
    api: Api = API.default
    guidance_scale: float = GUIDANCE.default
    width: int = WIDTH.default
    height: int = HEIGHT.default
    seed: int = 0
    count: int = 1
    response_format: str = RESPONSE_FORMAT.default
    output_format: str = OUTPUT_FORMAT.default
    timeout: float = float(DEFAULT_TIMEOUT)
    loras: tuple[Lora, ...] = ()

    kind = "generate"

    def __post_init__(self) -> None:
        check_prompt(self.prompt, limit=WAVESPEED_PROMPT_LIMIT, provider="WaveSpeed", documented=False)
        object.__setattr__(self, "loras", check_loras(self.loras))
        if not isinstance(self.negative_prompt, str):
            raise ValidationError("The negative_prompt must be text.", field="negative_prompt")
        check_text_length(self.negative_prompt, limit=WAVESPEED_PROMPT_LIMIT, provider="WaveSpeed",
                          field="negative_prompt", documented=False)
        MODEL.check(self.model)
        API.check(self.api)
        object.__setattr__(self, "guidance_scale", GUIDANCE.check(self.guidance_scale))
        RESPONSE_FORMAT.check(self.response_format)
        OUTPUT_FORMAT.check(self.output_format)
        object.__setattr__(self, "count", check_count(self.count))
        object.__setattr__(self, "timeout", check_number(self.timeout, "timeout", 0.001, 86400.0))
        if self.seed == RANDOM_SEED and not isinstance(self.seed, bool):
            object.__setattr__(self, "seed", random_seed(self.count if isinstance(self.count, int) else 1))
        check_seeds(self.seed, self.pictures_per_reference)
        if self.loras and self.api != "v3":
            raise ValidationError("LoRAs need the v3 api: /v1/images has no LoRA field. Set api to v3, or remove "
                                  "the LoRAs.", field="loras")
        if self.kind == "generate":
            w, h = check_size_for(self.width, self.height, self.api)
            object.__setattr__(self, "width", w)
            object.__setattr__(self, "height", h)

    @property
    def pictures_per_reference(self) -> int:
        return self.count

    @property
    def units(self) -> int:
        """The paid pictures this order asks for."""
        return self.count

    @property
    def sent_guidance(self) -> float | None:
        """The CFG actually sent: the v3 api has no such parameter."""
        return None if self.api == "v3" else self.guidance_scale

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def v3_model(self) -> V3Model:
        """The v3 model this order goes to (with the v3 api)."""
        return v3_model_for(self.kind, self.model, loras=bool(self.loras))

    @property
    def sent_negative(self) -> str:
        """The negative prompt actually sent: empty where the model takes none."""
        if self.api == "v3" and "negative_prompt" not in self.v3_model.fields:
            return ""
        return self.negative_prompt if self.negative_prompt.strip() else ""

    @property
    def sent_strength(self) -> float | None:
        """The strength actually sent (None: no strength is sent)."""
        return None

    @property
    def price(self) -> float:
        """The price per picture, published or estimated (see :attr:`V3Model.price`)."""
        return self.v3_model.price if self.api == "v3" else WAVESPEED_USD_PER_PICTURE

    @property
    def price_text(self) -> str:
        """The price per picture as the status line and estimates say it."""
        return self.v3_model.price_text if self.api == "v3" else f"about {usd(WAVESPEED_USD_PER_PICTURE)}"

    @property
    def route(self) -> Route:
        """How the order is sent (the provider that takes it is looked up by it)."""
        return route_of("wavespeed", self.api)

    @property
    def endpoint_name(self) -> str:
        """Where the order goes, for the artist: the v3 model id, or the v1/images model."""
        return self.v3_model.id if self.api == "v3" else f"{self.model} on /v1/images"


@dataclass(frozen=True)
class Edit(TextToImage):
    """Image to image at WaveSpeed: every reference gets ``count`` pictures, picture *i* with ``seed + i``.

    ``width``/``height`` of 0 take the reference's size (one side 0: that side follows its aspect ratio), fitted to
    the api's limits and rounded to a multiple of 16.
    """

    references: tuple[Reference, ...] = field(default=())
    strength: float = STRENGTH.default
    guidance_scale: float = EDIT_GUIDANCE.default
    width: int = 0
    height: int = 0

    kind = "edit"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.references:
            raise ValidationError("An edit needs a reference picture.", field="image")
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "strength", STRENGTH.check(self.strength))
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"The {name} must be 0 (the reference's size) or a size in pixels, not "
                                      f"{value!r}.", field=name)
        ref_w, ref_h = self.references[0].size
        w, h = size_from_reference(self.width, self.height, ref_w, ref_h, size_limits(self.api))
        w, h = check_size_for(w, h, self.api)
        object.__setattr__(self, "width", w)
        object.__setattr__(self, "height", h)
        if self.units > MAX_PICTURES:
            raise ValidationError(
                f"{len(self.references)} reference pictures x count {self.count} would make {self.units} paid "
                f"requests; the limit per run is {MAX_PICTURES}. Split the batch or lower the count.", field="count")

    @property
    def units(self) -> int:
        return len(self.references) * self.count

    @property
    def sent_strength(self) -> float | None:
        """``strength`` follows the seed guide (higher keeps more of the reference); v3 takes the denoise, its
        opposite, so it gets ``1 - strength``."""
        return round(1.0 - self.strength, 6) if self.api == "v3" else self.strength


@dataclass(frozen=True)
class Inpaint(Edit):
    """Inpainting with Z-Image-Turbo at WaveSpeed v3: each picture is repainted where its mask is white.

    ``pictures`` pair each picture with its mask (see :func:`pair_batches`); ``references`` follow from them.
    """

    pictures: tuple[MaskedReference, ...] = field(default=())
    model: str = "Z-Image-Turbo"
    api: Api = "v3"

    kind = "inpaint"

    def __post_init__(self) -> None:
        if not self.pictures:
            raise ValidationError("Inpainting needs a picture and a mask.", field="mask")
        object.__setattr__(self, "pictures", tuple(self.pictures))
        object.__setattr__(self, "references", tuple(p.reference for p in self.pictures))
        _turbo_v3_only(self, "Inpainting")
        super().__post_init__()

    @property
    def sent_strength(self) -> float | None:
        return None

    @property
    def scaled_masks(self) -> int:
        """How many masks came at another size than their picture and were scaled to it."""
        return sum(1 for p in self.pictures if p.scaled)


@dataclass(frozen=True)
class ControlNet(Edit):
    """Z-Image-Turbo ControlNet at WaveSpeed v3: each control picture guides ``count`` pictures.

    ``mode`` is depth, canny, pose (WaveSpeed makes the map) or none (the picture already is a control map).
    ``strength`` (0-1) is how strictly the control is followed and is sent as it is.
    """

    mode: str = MODE.default
    strength: float = CONTROL_STRENGTH.default
    model: str = "Z-Image-Turbo"
    api: Api = "v3"

    kind = "controlnet"

    def __post_init__(self) -> None:
        MODE.check(self.mode)
        _turbo_v3_only(self, "ControlNet")
        super().__post_init__()

    @property
    def sent_strength(self) -> float | None:
        return self.strength


def _turbo_v3_only(order: Edit, what: str) -> None:
    """Inpaint and ControlNet exist only as Z-Image-Turbo models at v3, and take no LoRAs."""
    if order.api != "v3" or order.model != "Z-Image-Turbo":
        raise ValidationError(f"{what} runs on WaveSpeed v3 with Z-Image-Turbo only.", field="api")
    if order.loras:
        raise ValidationError(f"{order.v3_model.id} takes no LoRAs; remove them.", field="loras")


PictureOrder = Union[TextToImage, Edit]


@dataclass(frozen=True)
class QingboTasks:
    """z-image-turbo tasks at Qingbo: ``count`` tasks, task *i* with ``seed + i`` (no seed or -1: Qingbo picks)."""

    prompt: str
    aspect_ratio: str = ASPECT_RATIO.default
    resolution: str = RESOLUTION.default
    prompt_extend: bool = False
    seed: int | None = None
    count: int = 1
    callback_url: str | None = None
    callback_events: tuple[str, ...] | None = None

    kind = "qingbo-submit"

    def __post_init__(self) -> None:
        check_prompt(self.prompt, limit=QINGBO_PROMPT_LIMIT, provider="Qingbo")
        ASPECT_RATIO.check(self.aspect_ratio)
        object.__setattr__(self, "resolution", RESOLUTION.check(self.resolution))
        object.__setattr__(self, "prompt_extend", bool(self.prompt_extend))
        object.__setattr__(self, "count", check_count(self.count))
        if self.seed == RANDOM_SEED and not isinstance(self.seed, bool):
            object.__setattr__(self, "seed", None)
        if self.seed is not None:
            check_seeds(self.seed, self.count)
        object.__setattr__(self, "callback_url", (self.callback_url or "").strip() or None)
        events = tuple(e for e in (self.callback_events or ()) if e)
        object.__setattr__(self, "callback_events", events or None)

    timeout: ClassVar[float] = 120.0  # how long a submit waits for another run submitting the same inputs
    route: ClassVar[Route] = "qingbo"

    @property
    def units(self) -> int:
        return self.count

    def seed_of(self, index: int) -> int | None:
        return None if self.seed is None else self.seed + index

    def options(self) -> dict[str, object]:
        """The submit's options beside the prompt and seed, as :meth:`QingboClient.submit` takes them."""
        return {"aspect_ratio": self.aspect_ratio, "resolution": self.resolution,
                "prompt_extend": self.prompt_extend, "callback_url": self.callback_url,
                "callback_events": list(self.callback_events) if self.callback_events else None}


Order = Union[TextToImage, Edit, QingboTasks]
"""Any order the engine runs."""


def check_seeds(seed: object, count: int, *, field: str = "seed") -> int:
    """A first seed whose ``count`` pictures (``seed`` .. ``seed + count - 1``) all stay within 0-SEED_MAX."""
    first = check_seed_range(seed, field=field)
    last = first + count - 1
    if last > SEED_MAX:
        raise ValidationError(f"The {field} {first} with count {count} would use seeds up to {last}, past the "
                              f"largest seed {SEED_MAX}; use a {field} of at most {SEED_MAX - count + 1}.",
                              field=field)
    return first


def split_events(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Callback events from comma-separated text (or a list), blanks dropped."""
    parts = text.split(",") if isinstance(text, str) else list(text or ())
    return tuple(part.strip() for part in parts if part and part.strip())
