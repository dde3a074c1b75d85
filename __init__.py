"""comfyui-zimage: Z-Image (WaveSpeed) and Qingbo z-image-turbo as ComfyUI nodes."""

import sys

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]


def _register_routes() -> None:
    """Add the /zimage/ routes (prices, spend, tasks, collect) to a running ComfyUI's server; nothing elsewhere."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None or not hasattr(instance, "routes"):
        return
    try:
        from .server_routes import register

        register(instance)
    except Exception as err:  # the nodes work without the routes; only the badges and the sidebar go quiet
        from .zimage_api.logs import logger

        logger.warning("The Z-Image routes could not be added (%s); prices and the sidebar are unavailable.", err)


_register_routes()
