"""Every constant the pack's entry points share, in one place: models, apis, formats, the seed range and prices.

Prices are the published ones; WaveSpeed bills per picture, Qingbo in quota (500,000 quota = 1 USD).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MODELS", "APIS", "RESPONSE_FORMATS", "V3_OUTPUT_FORMATS", "V3_MODEL_PATHS", "SEED_MAX", "QUOTA_PER_USD",
    "QINGBO_QUOTA_PER_PICTURE", "QINGBO_USD_PER_PICTURE", "WAVESPEED_USD_PER_PICTURE", "picture_extension",
    "V3Model", "V3_MODELS", "V3_COMMON_FIELDS", "v3_model_for", "LORA_MAX", "LORA_SCALE_MAX",
    "CONTROL_MODES", "WAVESPEED_PROMPT_LIMIT",
]

MODELS = ("Z-Image-Base", "Z-Image-Turbo")
APIS = ("v1/images", "v3")
RESPONSE_FORMATS = ("b64_json", "url")
V3_OUTPUT_FORMATS = ("png", "jpeg")
V3_MODEL_PATHS = {"Z-Image-Base": "wavespeed-ai/z-image/base", "Z-Image-Turbo": "wavespeed-ai/z-image/turbo"}

# The largest seed every api takes (WaveSpeed v3 documents 2147483647); -1 or None means random.
SEED_MAX = 2_147_483_647

QUOTA_PER_USD = 500_000
# z-image-turbo at Qingbo: the published $0.010625, billed as whole quota.
QINGBO_QUOTA_PER_PICTURE = 5313
QINGBO_USD_PER_PICTURE = QINGBO_QUOTA_PER_PICTURE / QUOTA_PER_USD  # 0.010626
# Z-Image at WaveSpeed, as published for the base model; the status line and estimates say "about". It is also the
# estimate for a v3 model whose price is not published.
WAVESPEED_USD_PER_PICTURE = 0.01

# WaveSpeed documents no prompt length. This pack sends at most this many characters (a detailed prompt is a few
# hundred), so that a document pasted into the prompt by mistake is refused before it is sent and billed.
WAVESPEED_PROMPT_LIMIT = 4000

LORA_MAX = 3  # LoRAs per request, at every -lora model
LORA_SCALE_MAX = 4.0
CONTROL_MODES = ("depth", "canny", "pose", "none")
V3_COMMON_FIELDS = frozenset({"size", "seed", "output_format", "enable_sync_mode", "enable_base64_output"})


@dataclass(frozen=True)
class V3Model:
    """One Z-Image model at WaveSpeed v3: its id (the submit path), the fields it takes beside the common ones, the
    required ones, and its published price per picture (None: not published)."""

    id: str
    fields: frozenset[str]
    required: frozenset[str]
    usd: float | None

    @property
    def price(self) -> float:
        """The price per picture to show and estimate: the published one, else the base model's."""
        return WAVESPEED_USD_PER_PICTURE if self.usd is None else self.usd

    @property
    def price_text(self) -> str:
        return f"${self.usd:g}" if self.usd is not None else f"about ${WAVESPEED_USD_PER_PICTURE:g} (not published)"


def _model(path: str, fields: str, required: str, usd: float | None) -> V3Model:
    return V3Model(f"wavespeed-ai/{path}", frozenset(fields.split()), frozenset(required.split()), usd)


V3_MODELS = {model.id: model for model in (
    _model("z-image/turbo", "prompt image strength", "prompt", None),
    _model("z-image/base", "prompt negative_prompt image strength", "prompt", 0.01),
    _model("z-image/turbo-lora", "prompt loras", "prompt", None),
    _model("z-image/base-lora", "prompt negative_prompt image strength loras", "prompt", 0.012),
    _model("z-image-turbo/image-to-image", "prompt image strength", "prompt image", 0.005),
    _model("z-image-turbo/image-to-image-lora", "prompt image strength loras", "prompt image", None),
    _model("z-image/turbo-inpaint", "prompt image mask_image", "prompt image mask_image", 0.02),
    _model("z-image-turbo/controlnet", "prompt image mode strength", "prompt image", 0.012),
)}


def v3_model_for(kind: str, model: str, *, loras: bool = False) -> V3Model:
    """The v3 model an order goes to: ``kind`` is generate, edit, inpaint or controlnet; ``model`` is one of
    :data:`MODELS`; ``loras`` whether LoRAs come along."""
    turbo = model == "Z-Image-Turbo"
    if kind == "inpaint":
        path = "z-image/turbo-inpaint"
    elif kind == "controlnet":
        path = "z-image-turbo/controlnet"
    elif kind == "edit" and turbo:
        path = "z-image-turbo/image-to-image" + ("-lora" if loras else "")
    else:
        path = ("z-image/turbo" if turbo else "z-image/base") + ("-lora" if loras else "")
    return V3_MODELS[f"wavespeed-ai/{path}"]


def picture_extension(data: bytes) -> str:
    """The file extension of encoded picture bytes, from their magic number: png, jpg, webp, or bin."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"
