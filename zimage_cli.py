"""The command line for any Python, including the embedded one of ComfyUI's Windows portable build.

That Python ignores the current folder, so ``python -m zimage_api`` cannot find the package there; this file finds
it next to itself:

    python_embeded\\python.exe ComfyUI\\custom_nodes\\comfyui-zimage\\zimage_cli.py tasks resume --out recovered

A missing requirement is named with the pip command that installs it into this same Python.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zimage_api.packages import missing_package_message  # noqa: E402  (the path above must be set first)


def _main() -> int:
    try:
        from zimage_api.cli import main
    except ModuleNotFoundError as err:
        message = missing_package_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return main()


if __name__ == "__main__":
    raise SystemExit(_main())
