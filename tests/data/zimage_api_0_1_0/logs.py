"""Shim: the 0.1.0 modules log through the pack's logger."""

from zimage_api.logs import logger

__all__ = ["logger"]
