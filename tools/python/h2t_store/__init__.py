"""Read an h2t-store (features and head registry) from Python; capture PyTorch activations into it.

The on-disk format is described normatively by ``schemas/store-format.md`` and
``schemas/registry-format.md``; this package reads it directly (read-only, one LMDB read transaction
per call, safe beside a running writer) and drives the ``h2t-store`` CLI for everything that writes.

- ``Store``: feature sets, backbones, datasets, splits; rows or columns as float32 numpy arrays.
- ``Registry``: list heads, resolve ``task@alias``, load heads, ``predict`` as the CLI does.
- ``h2t_store.datasets`` (extra ``torch``): ``FeatureDataset``, ``FeatureIterableDataset``.
- ``h2t_store.arrow`` (extra ``arrow``): ``to_table``, ``record_batches``, ``write_parquet``.
- ``h2t_store.capture`` (extra ``torch``): ``capture(model, loader, store=..., ...)``.
"""

from .errors import CaptureError, H2TStoreError, NotFound, StoreFormatError
from .registry import Head, Predictions, Registry
from .store import FeatureSet, Split, Store, example_id

__version__ = "0.1.0"

__all__ = ["Store", "FeatureSet", "Split", "Registry", "Head", "Predictions", "example_id",
           "H2TStoreError", "StoreFormatError", "NotFound", "CaptureError", "__version__"]
