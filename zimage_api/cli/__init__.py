"""The command line: ``python -m zimage_api`` (or ``zimage_cli.py``), driven by the same engine as the nodes.

``main`` parses and dispatches (``main.py``); ``parser`` declares the commands; ``commands`` runs the single ones
(``generate``, ``edit``, ``submit``, ``poll``, ``tasks``); ``batch`` with ``batch_rows`` and ``batch_manifest`` runs a
file of rows; ``runtime`` holds what one run shares.
"""

from .main import main, run
from .parser import build_parser

__all__ = ["main", "run", "build_parser"]
