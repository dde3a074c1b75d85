"""Every constant the pack's entry points share, in one place: models, apis, formats, the seed range and prices.

Prices are the published ones; WaveSpeed bills per picture, Qingbo in quota (500,000 quota = 1 USD).
"""

from __future__ import annotations

__all__ = [
    "MODELS", "APIS", "RESPONSE_FORMATS", "V3_OUTPUT_FORMATS", "V3_MODEL_PATHS", "SEED_MAX", "QUOTA_PER_USD",
    "QINGBO_QUOTA_PER_PICTURE", "QINGBO_USD_PER_PICTURE", "WAVESPEED_USD_PER_PICTURE", "picture_extension",
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
# Z-Image at WaveSpeed, as published for the base model; the status line and estimates say "about".
WAVESPEED_USD_PER_PICTURE = 0.01


def picture_extension(data: bytes) -> str:
    """The file extension of encoded picture bytes, from their magic number: png, jpg, webp, or bin."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"
