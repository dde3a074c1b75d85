"""The ledger and receipts of release 0.1.0, verbatim (``ledger.py``, ``receipts.py`` from commit de9a8fa).

``tests/test_store.py`` runs them to make a real 0.1.0 data folder, then upgrades it. ``logs`` and ``results`` are
shims over today's modules: the two files use only their logger and ``GenerationResult``.
"""
