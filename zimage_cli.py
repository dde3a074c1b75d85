"""The command line for any Python, including the embedded one of ComfyUI's Windows portable build.

That Python ignores the current folder, so ``python -m zimage_api`` cannot find the package there; this file finds
it next to itself:

    python_embeded\\python.exe ComfyUI\\custom_nodes\\comfyui-zimage\\zimage_cli.py tasks resume --out recovered
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zimage_api.cli import main  # noqa: E402  (the path above must be set first)

if __name__ == "__main__":
    raise SystemExit(main())
