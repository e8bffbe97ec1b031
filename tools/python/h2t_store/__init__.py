"""Read an h2t-store (features and head registry) from Python; capture PyTorch activations into it.

The on-disk format is described normatively by ``schemas/store-format.md`` and
``schemas/registry-format.md``; this package reads it directly (read-only, one LMDB read transaction
per call) and drives the ``h2t-store`` CLI for everything that writes.
"""

__version__ = "0.1.0"
