"""What a finished generation hands back: the encoded pictures plus everything needed to reproduce or bill it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalog import QUOTA_PER_USD

__all__ = ["GenerationResult", "QUOTA_PER_USD", "quota_to_usd"]



def quota_to_usd(quota: float | None) -> float | None:
    """Qingbo quota units to US dollars (500,000 quota = 1 USD)."""
    return None if quota is None else round(quota / QUOTA_PER_USD, 6)


@dataclass
class GenerationResult:
    """Pictures from one call, as the provider encoded them (PNG/JPEG bytes), with their provenance.

    ``images`` are never re-encoded, so saving them keeps the provider's exact bytes. ``info()`` is the JSON-able
    summary shown to artists; it holds no key and no picture data.
    """

    provider: str
    protocol: str
    model: str
    images: list[bytes]
    prompt_sha256: str
    urls: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    size: tuple[int, int] | None = None
    cost_quota: float | None = None
    cost_usd: float | None = None
    elapsed: float = 0.0
    paths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: provider, model, task ids, seeds, size, cost, result URLs and the prompt hash."""
        data: dict[str, Any] = {
            "provider": self.provider,
            "protocol": self.protocol,
            "model": self.model,
            "images": len(self.images),
            "task_ids": list(self.task_ids),
            "seeds": list(self.seeds),
            "size": f"{self.size[0]}x{self.size[1]}" if self.size else None,
            "prompt_sha256": self.prompt_sha256,
            "urls": list(self.urls),
            "elapsed_s": round(self.elapsed, 2),
        }
        if self.cost_quota is not None:
            data["cost_quota"] = self.cost_quota
        if self.cost_usd is not None:
            data["cost_usd"] = self.cost_usd
        if self.paths:
            data["paths"] = list(self.paths)
        if self.notes:
            data["notes"] = list(self.notes)
        return data

    @classmethod
    def merge(cls, parts: list["GenerationResult"]) -> "GenerationResult":
        """One result from several calls of the same kind (a count of images run concurrently)."""
        if not parts:
            raise ValueError("merge() needs at least one result")
        first = parts[0]
        costs_q = [p.cost_quota for p in parts if p.cost_quota is not None]
        costs_u = [p.cost_usd for p in parts if p.cost_usd is not None]
        notes: list[str] = []
        for part in parts:
            notes.extend(n for n in part.notes if n not in notes)
        return cls(
            provider=first.provider, protocol=first.protocol, model=first.model,
            images=[img for p in parts for img in p.images], prompt_sha256=first.prompt_sha256,
            urls=[u for p in parts for u in p.urls], task_ids=[t for p in parts for t in p.task_ids],
            seeds=[s for p in parts for s in p.seeds], size=first.size,
            cost_quota=sum(costs_q) if costs_q else None,
            cost_usd=round(sum(costs_u), 6) if costs_u else None,
            elapsed=max(p.elapsed for p in parts), paths=[x for p in parts for x in p.paths], notes=notes,
        )
