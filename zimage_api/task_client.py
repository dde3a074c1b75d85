"""What the two task-based clients (WaveSpeed v3 and Qingbo) share: a transport and a ledger of their task ids."""

from __future__ import annotations

from typing import Any, ClassVar

from .config import Provider
from .ledger import Ledger
from .logs import logger, prompt_hash
from .transport import Transport

__all__ = ["TaskClient"]


class TaskClient:
    """Base of a client whose paid work has an id.

    ``ledger`` is where the ids are recorded (default: :meth:`Ledger.default`, resolved at each use; ``False``
    disables it). Other keyword arguments go to :class:`~zimage_api.transport.Transport` (``api_key``,
    ``base_url``, ``timeout``, ``retry``, ``sleep``, ``now``...).
    """

    provider: ClassVar[Provider]

    def __init__(self, *, transport: Transport | None = None, ledger: Ledger | bool | None = None,
                 **transport_options: Any) -> None:
        self.transport = transport or Transport(self.provider, **transport_options)
        self._ledger = ledger

    @property
    def ledger(self) -> Ledger | None:
        if self._ledger is False:
            return None
        if isinstance(self._ledger, Ledger):
            return self._ledger
        return Ledger.default()

    def _record_submitted(self, task_id: str, *, model: str, prompt: str, status: str,
                          params: dict[str, Any]) -> None:
        """Put a just-issued id in the ledger. A ledger that cannot be written never costs the paid task: the id
        is logged instead, and the run goes on."""
        ledger = self.ledger
        if ledger is None:
            return
        try:
            ledger.record_submitted(task_id, provider=self.provider.section, model=model,
                                    prompt_sha256=prompt_hash(prompt), params=params, status=status or "submitted",
                                    base_url=self.transport.base_url)
        except OSError as err:
            logger.warning("could not write %s task %s to the ledger %s (%s); keep this id to collect it later",
                           self.provider.name, task_id, ledger.path, err)

    def _save_pictures(self, task_id: str, images: list[bytes]) -> list[str]:
        """Keep local copies of a task's pictures; an unwritable folder is a warning, the pictures are still returned."""
        ledger = self.ledger
        if ledger is None:
            return []
        try:
            return ledger.save_pictures(task_id, images)
        except OSError as err:
            logger.warning("could not keep the pictures of %s task %s in %s (%s)", self.provider.name, task_id,
                           ledger.results_dir, err)
            return []

    def _issued_here(self, task_id: str) -> bool:
        """Whether the ledger says this server issued ``task_id`` (True when the ledger does not know)."""
        ledger = self.ledger
        entry = ledger.get(task_id) if ledger is not None else None
        issuer = (entry or {}).get("base_url")
        return not issuer or issuer == self.transport.base_url

    def _note(self, task_id: str, status: str, **fields: Any) -> None:
        """Record a task's new status; a ledger that cannot be written is a warning, never a failed run."""
        ledger = self.ledger
        if ledger is None:
            return
        try:
            ledger.record_status(task_id, status, **{k: v for k, v in fields.items() if v is not None})
        except OSError as err:
            logger.warning("could not update the ledger for %s: %s", task_id, err)
