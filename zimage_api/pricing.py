"""The price of a node's next run, from its widgets: what the canvas badge and the sidebar show before anything is sent.

The price comes from the order the node would build (the same catalog and the same rules), made with a placeholder
prompt and placeholder references: only the widgets that choose a model and a count change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .catalog import LORA_MAX, QINGBO_USD_PER_PICTURE, usd
from .errors import ValidationError
from .orders import ControlNet, Edit, Inpaint, Lora, MaskedReference, QingboTasks, Reference, TextToImage

__all__ = ["Price", "PRICED_NODES", "price_of", "usd_text"]

PRICED_NODES = ("ZImageGenerate", "ZImageEdit", "ZImageInpaint", "ZImageControlNet", "QingboTaskSubmit")

_PROMPT = "price"
_REFERENCE = Reference((b"", "reference.png", "image/png"), (1024, 1024))
_LORA = Lora("owner/lora", 1.0)


@dataclass(frozen=True)
class Price:
    """The price of one run: ``units`` paid pictures at ``per_picture`` USD each.

    ``estimated``: the price is not published, the base model's is shown. ``per_reference``: the node makes
    ``units`` pictures for every picture of its image input. ``extra``: an option costs extra on top (Qingbo's
    prompt_extend), not included.
    """

    node: str
    model: str
    per_picture: float
    units: int
    estimated: bool = False
    per_reference: bool = False
    extra: bool = False

    @property
    def usd(self) -> float:
        return round(self.per_picture * self.units, 6)

    @property
    def text(self) -> str:
        """The run's price as the badge shows it: ``$0.024``, ``≈$0.01`` (estimated), ``$0.0106+`` (extra)."""
        return ("≈" if self.estimated else "") + usd_text(self.usd) + ("+" if self.extra else "")

    def as_json(self) -> dict[str, object]:
        return {"node": self.node, "model": self.model, "usd": self.usd, "text": self.text,
                "per_picture": self.per_picture, "per_picture_text": usd_text(self.per_picture),
                "units": self.units, "estimated": self.estimated, "per_reference": self.per_reference,
                "extra": self.extra}


def usd_text(amount: float) -> str:
    """Dollars with as many decimals as the amount needs (at least 2, at most 4): $0.01, $0.024, $0.0106, $1.20."""
    return usd(amount)


def _count(widgets: Mapping[str, object]) -> object:
    count = widgets.get("count", 1)
    return int(count) if isinstance(count, float) and count.is_integer() else count


def price_of(node_type: str, widgets: Mapping[str, object], loras: int = 0) -> Price:
    """The price of a run of ``node_type`` (a class name of :data:`PRICED_NODES`) with these widget values and
    ``loras`` LoRAs connected. Raises :class:`ValidationError` for a node without a price or widgets the node
    would refuse (LoRAs with /v1/images, more than 3 LoRAs, a count outside 1-8)."""
    if isinstance(loras, bool) or not isinstance(loras, int) or loras < 0:
        raise ValidationError(f"The loras count must be 0 or more, not {loras!r}.", field="loras")
    if loras > LORA_MAX:
        raise ValidationError(f"{loras} LoRAs are chained; WaveSpeed takes at most {LORA_MAX} per picture. Remove a "
                              "Z-Image LoRA node.", field="loras")
    count = _count(widgets)
    if node_type == "QingboTaskSubmit":
        tasks = QingboTasks(prompt=_PROMPT, count=count, prompt_extend=bool(widgets.get("prompt_extend", False)))  # type: ignore[arg-type]
        return Price(node_type, "z-image-turbo (Qingbo)", QINGBO_USD_PER_PICTURE, tasks.units,
                     extra=tasks.prompt_extend)
    chosen = {name: widgets[name] for name in ("model", "api") if name in widgets}
    lora_values = (_LORA,) * loras
    order: TextToImage
    if node_type == "ZImageGenerate":
        order = TextToImage(prompt=_PROMPT, count=count, loras=lora_values, **chosen)  # type: ignore[arg-type]
    elif node_type == "ZImageEdit":
        order = Edit(prompt=_PROMPT, references=(_REFERENCE,), count=count, loras=lora_values,  # type: ignore[arg-type]
                     **chosen)  # type: ignore[arg-type]
    elif node_type == "ZImageInpaint":
        masked = MaskedReference(_REFERENCE, (b"", "mask.png", "image/png"))
        order = Inpaint(prompt=_PROMPT, pictures=(masked,), count=count)  # type: ignore[arg-type]
    elif node_type == "ZImageControlNet":
        mode = widgets.get("mode", "depth")
        order = ControlNet(prompt=_PROMPT, references=(_REFERENCE,), count=count, mode=mode)  # type: ignore[arg-type]
    else:
        raise ValidationError(f"{node_type!r} has no price: only {', '.join(PRICED_NODES)} are paid nodes.",
                              field="node")
    estimated = order.api != "v3" or order.v3_model.usd is None
    per_reference = node_type != "ZImageGenerate"
    return Price(node_type, order.endpoint_name, order.price, order.units, estimated=estimated,
                 per_reference=per_reference)
