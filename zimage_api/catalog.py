"""Every constant the pack's entry points share, in one place: models, apis, providers, formats, limits, the seed
range and prices, and the one function that writes a price.

Prices are the published ones; WaveSpeed bills per picture, Qingbo in quota (500,000 quota = 1 USD).

Three words name where a picture is made, each defined here once: a :data:`Provider` (``wavespeed``, ``qingbo``), a
WaveSpeed :data:`Api` (``v1/images``, ``v3``), and a :data:`Route`, the batch file's ``provider`` word that names
both (``wavespeed-images``, ``wavespeed-v3``, ``qingbo``; :func:`route_named` also reads its older aliases).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "MODELS", "APIS", "RESPONSE_FORMATS", "V3_OUTPUT_FORMATS", "V3_MODEL_PATHS", "SEED_MAX", "QUOTA_PER_USD",
    "QINGBO_QUOTA_PER_PICTURE", "QINGBO_USD_PER_PICTURE", "WAVESPEED_USD_PER_PICTURE", "picture_extension",
    "V3Model", "V3_MODELS", "V3_COMMON_FIELDS", "v3_model_for", "LORA_MAX", "LORA_SCALE_MAX",
    "CONTROL_MODES", "WAVESPEED_PROMPT_LIMIT", "Api", "Provider", "Route", "PROVIDERS", "ROUTES", "ROUTE_ALIASES",
    "route_named", "route_of", "provider_and_api", "QINGBO_PROMPT_LIMIT", "ASPECT_RATIOS", "RESOLUTIONS",
    "COUNT_MAX", "TIMEOUT_MIN", "TIMEOUT_MAX", "DEFAULT_TIMEOUT", "RANDOM_SEED", "usd",
]

MODELS = ("Z-Image-Base", "Z-Image-Turbo")

Api = Literal["v1/images", "v3"]
"""WaveSpeed's two protocols: the OpenAI-style ``/v1/images`` and the native v3 predictions."""
Provider = Literal["wavespeed", "qingbo"]
"""Who makes the picture (and bills it)."""
Route = Literal["wavespeed-images", "wavespeed-v3", "qingbo"]
"""A provider with its api, as one word: a batch row's ``provider``."""

APIS: tuple[Api, ...] = get_args(Api)
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
ROUTES: tuple[Route, ...] = get_args(Route)
_ROUTE_PARTS: dict[Route, tuple[Provider, Api | None]] = {
    "wavespeed-images": ("wavespeed", "v1/images"), "wavespeed-v3": ("wavespeed", "v3"), "qingbo": ("qingbo", None)}
ROUTE_ALIASES: dict[str, Route] = {"images": "wavespeed-images", "v1/images": "wavespeed-images",
                                   "wavespeed": "wavespeed-images", "v3": "wavespeed-v3"}
"""Other words a batch file may use for a route (older files wrote them)."""


def route_named(word: object) -> Route | None:
    """The route a batch file's word names (any case, an alias too), or None."""
    text = str(word).strip().lower()
    text = ROUTE_ALIASES.get(text, text)
    return next((route for route in ROUTES if route == text), None)


def provider_and_api(route: Route) -> tuple[Provider, Api | None]:
    """The provider and api of a route (Qingbo has no api choice: None)."""
    return _ROUTE_PARTS[route]


def route_of(provider: Provider, api: Api | None = None) -> Route:
    """The route of a provider and api, the other way round from :func:`provider_and_api`."""
    for route, parts in _ROUTE_PARTS.items():
        if parts == (provider, api if provider == "wavespeed" else None):
            return route
    raise ValueError(f"no route for provider {provider!r} with api {api!r}")

RESPONSE_FORMATS = ("b64_json", "url")
V3_OUTPUT_FORMATS = ("png", "jpeg")
V3_MODEL_PATHS = {"Z-Image-Base": "wavespeed-ai/z-image/base", "Z-Image-Turbo": "wavespeed-ai/z-image/turbo"}

# The largest seed every api takes (WaveSpeed v3 documents 2147483647); -1 (RANDOM_SEED) or None means random.
SEED_MAX = 2_147_483_647
RANDOM_SEED = -1

COUNT_MAX = 8  # pictures or tasks per node run or command
TIMEOUT_MIN, TIMEOUT_MAX = 10, 900  # seconds a node may wait for its pictures
DEFAULT_TIMEOUT = 120  # seconds to wait for pictures, on every node and command that is given none

QINGBO_PROMPT_LIMIT = 800  # characters; Qingbo documents it
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3")
RESOLUTIONS = ("1K", "2K")

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
        return usd(self.usd) if self.usd is not None else f"about {usd(WAVESPEED_USD_PER_PICTURE)} (not published)"


def usd(amount: float, places: int | None = None, *, exact: bool = False) -> str:
    """A price as every text writes it: as many decimals as it needs, two to four ($0.03, $0.005, $0.012, $0.0106);
    ``places`` decimals for a total ($0.0400); ``exact`` for a billed figure in full ($0.010626)."""
    if places is not None:
        return f"${amount:.{places}f}"
    if exact:
        return f"${amount:g}"
    text = f"{amount:.4f}".rstrip("0")
    return "$" + (text if len(text.partition(".")[2]) >= 2 else f"{amount:.2f}")


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
