#!/usr/bin/env python3
"""Read features from an h2t-store directory without the Swift code: a command-line shim over the
``h2t_store`` package (``tools/python``), which reads the format of ``schemas/store-format.md``.

Install the package with ``python3 -m pip install ./tools/python`` (``tools/setup`` does); when it
is not installed, this script uses the copy beside it.

Library use (kept for existing callers; new code should use ``h2t_store.Store``)::

    from read_store import list_feature_sets, read_split, read_rows
    X, labels = read_split("store", "3fa1", "flowers", "train")
    X = read_rows("store", "3fa1", ["<64 hex digits>", ...])

Command line::

    python3 tools/read_store.py STORE                     # list feature sets (JSON)
    python3 tools/read_store.py STORE --featureset 3fa1 --dataset flowers --split train \\
        --out features.npy [--labels-out labels.npy] [--columns 0,17,4096]
    python3 tools/read_store.py STORE --featureset 3fa1 --examples HEX,HEX --out rows.npy
    python3 tools/read_store.py STORE --manifests         # every manifest, ids checked (JSON)

Errors are one line on stderr and exit status 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

try:
    import h2t_store
except ImportError:  # not installed: the package beside this script
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
    import h2t_store

from h2t_store import H2TStoreError, Store
from h2t_store import H2TStoreError as StoreFormatError  # the name existing callers catch


def list_feature_sets(path: str) -> List[dict]:
    """Every feature set: ``{"id", "manifest", "rows", "segments"}``, sorted by id."""
    with Store(path) as store:
        return [{"id": fs.id, "manifest": fs.manifest, "rows": fs.rows, "segments": len(fs.starts)}
                for fs in store.feature_sets()]


def read_rows(path: str, fs: str, example_ids_hex: Sequence[str], columns: Optional[Sequence[int]] = None) -> np.ndarray:
    """Rows of the given examples (64-hex-digit ids), all columns or only ``columns``."""
    try:
        with Store(path) as store:
            return store.read_examples(fs, list(example_ids_hex), columns)
    except ValueError as error:
        raise StoreFormatError(str(error)) from None


def read_split(path: str, featureset_prefix: str, dataset: str, split: str,
               columns: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """A dataset split as ``(X float32 (n, k), labels int64 (n,))``, in split order."""
    with Store(path) as store:
        return store.read_split(featureset_prefix, dataset, split, columns)


def read_manifests(path: str) -> dict:
    """Every stored JSON record, manifest ids checked against their bytes."""
    with Store(path) as store:
        return {"backbones": store.backbones(), "featuresets": {fs.id: fs.manifest for fs in store.feature_sets()},
                "datasets": store.datasets(), "examples": store.examples()}


def _parse_columns(text: Optional[str]) -> Optional[List[int]]:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"read_store.py: --columns must be comma-separated integers, got '{text}'") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Read features from an h2t-store without the Swift code.")
    parser.add_argument("store", help="store directory (holds data.mdb)")
    parser.add_argument("--featureset", help="feature set id or prefix (>= 4 hex digits)")
    parser.add_argument("--dataset", help="dataset name")
    parser.add_argument("--split", help="split name")
    parser.add_argument("--examples", help="comma-separated example ids (64 hex digits) instead of a split")
    parser.add_argument("--columns", help="comma-separated global column indices (default: all)")
    parser.add_argument("--out", help="write the float32 matrix here (.npy)")
    parser.add_argument("--labels-out", help="write the int64 labels here (.npy; splits only)")
    parser.add_argument("--manifests", action="store_true", help="print every manifest as JSON, ids checked")
    args = parser.parse_args(argv)
    try:
        if args.manifests:
            json.dump(read_manifests(args.store), sys.stdout, indent=1, sort_keys=True, ensure_ascii=False)
            print()
            return 0
        if args.featureset is None:
            listing = [{"id": fs["id"], "rows": fs["rows"], "segments": fs["segments"],
                        "width": fs["manifest"]["width"], "dtype": fs["manifest"]["codec"]["dtype"]}
                       for fs in list_feature_sets(args.store)]
            json.dump(listing, sys.stdout, indent=1)
            print()
            return 0
        if args.out is None:
            parser.error("--out is required with --featureset")
        columns = _parse_columns(args.columns)
        labels = None
        if args.examples is not None:
            ids = [part.strip() for part in args.examples.split(",") if part.strip()]
            matrix = read_rows(args.store, args.featureset, ids, columns)
        elif args.dataset is not None and args.split is not None:
            matrix, labels = read_split(args.store, args.featureset, args.dataset, args.split, columns)
        else:
            parser.error("give --dataset and --split, or --examples")
        np.save(args.out, matrix)
        if args.labels_out is not None:
            if labels is None:
                parser.error("--labels-out needs --dataset and --split")
            np.save(args.labels_out, labels)
        json.dump({"rows": matrix.shape[0], "cols": matrix.shape[1], "out": args.out}, sys.stdout)
        print()
        return 0
    except H2TStoreError as error:
        print(f"read_store.py: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
