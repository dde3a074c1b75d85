"""What a run tells the artist: notes on parameters that had no effect, costs as text, and the JSON summary."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .catalog import QUOTA_PER_USD, usd
from .results import GenerationResult

if TYPE_CHECKING:
    from .orders import PictureOrder

__all__ = ["TURBO_NOTE", "V3_CFG_NOTE", "V1_FORMAT_NOTE", "model_notes", "order_notes", "price_text", "usd",
           "format_cost", "pre_consumed_text",
           "cost_text", "split_events", "info_json"]

TURBO_NOTE = "Z-Image-Turbo is distilled to 8 steps: CFG (guidance_scale) and the negative prompt have no effect."
V3_CFG_NOTE = "WaveSpeed v3 has no guidance_scale parameter: CFG was not sent."
V1_FORMAT_NOTE = "output_format applies to the v3 api only; /v1/images returns PNG."


def model_notes(model: str, api: str, output_format: str) -> list[str]:
    """What the artist should know about these settings: parameters that have no effect or were not sent."""
    notes = [TURBO_NOTE] if model == "Z-Image-Turbo" else []
    if api == "v3":
        notes.append(V3_CFG_NOTE)
    elif output_format != "png":
        notes.append(V1_FORMAT_NOTE)
    return notes


def order_notes(order: PictureOrder) -> list[str]:
    """What the artist should know about an order: :func:`model_notes` for Generate and Edit, a negative prompt
    that its model does not take, and masks scaled to their pictures."""
    notes = model_notes(order.model, order.api, order.output_format) if order.kind in ("generate", "edit") else []
    if order.negative_prompt.strip() and not order.sent_negative:
        notes.append(f"{order.v3_model.id} takes no negative prompt: the negative prompt was not sent.")
    scaled = int(getattr(order, "scaled_masks", 0))
    if scaled:
        notes.append(f"{scaled} mask(s) had another size than their picture and were scaled to it.")
    return notes


def price_text(order: PictureOrder) -> str:
    """What an order is about to cost, for the status line before a run and the CLI's estimate."""
    where = f" · {order.v3_model.id}" if order.api == "v3" else ""
    return (f"{order.units} picture(s) at {order.price_text} each (about {usd(order.price * order.units)})"
            f"{where}")


def format_cost(quota: float | None) -> str:
    """Qingbo quota as text with dollars: "10626 quota ($0.021252)"."""
    if quota is None:
        return "cost unknown"
    return f"{quota:g} quota (${quota / QUOTA_PER_USD:.6f})"


def pre_consumed_text(tasks: Sequence[Any]) -> str | None:
    """The quota Qingbo reserved for accepted tasks (objects with ``pre_consumed_cost``), as text."""
    quotas = [t.pre_consumed_cost for t in tasks if t is not None and t.pre_consumed_cost is not None]
    return f"pre-consumed {format_cost(sum(quotas))}" if quotas else None


def cost_text(results: Sequence[GenerationResult]) -> str | None:
    """The billed quota of finished results, as text; None when no result carries a cost."""
    quotas = [r.cost_quota for r in results if r.cost_quota is not None]
    return format_cost(sum(quotas)) if quotas else None


def split_events(text: str) -> list[str]:
    """Comma-separated callback events to a list, blanks dropped."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def info_json(parts: Sequence[GenerationResult], *, notes: Iterable[str] = (), **extra: Any) -> str:
    """One JSON summary of several results: :meth:`GenerationResult.info` of their merge, ``extra`` and ``notes``.

    It holds what the results hold (no key, no picture data), plus the caller's explicit extras.
    """
    data: dict[str, Any] = GenerationResult.merge(list(parts)).info() if parts else {}
    data.update({key: value for key, value in extra.items() if value is not None})
    all_notes = list(data.get("notes") or [])
    all_notes.extend(note for note in notes if note and note not in all_notes)
    if all_notes:
        data["notes"] = all_notes
    return json.dumps(data, indent=2, ensure_ascii=False)
