"""Shim: ``GenerationResult`` has not changed since 0.1.0."""

from zimage_api.results import GenerationResult

__all__ = ["GenerationResult"]
