"""The model registry, read-only (``schemas/registry-format.md``): list heads, resolve references,
load heads and apply them exactly as ``h2t-store predict`` does."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import lmdb
import numpy as np

from .errors import H2TStoreError, NotFound, StoreFormatError
from .store import ExampleIds, Store

REGISTRY_TABLES = ("registry", "aliases", "tags")
#: Sort keys of ``heads`` (as ``h2t-store heads --sort``): metrics best first, ``created`` newest first.
SORT_KEYS = ("test_accuracy", "cv_accuracy", "gain_vs_probe", "kept_features", "created", "version", "task")
_PART_SUMMARY, _PART_BODY, _PART_ENTRY = 0, 1, 2
#: Normalisation rules of head inputs this reader applies.
RULES = ("per_tap_unit_l2_over_kept", "raw_selected")
_VERSION = re.compile(r"^[vV]?([0-9]{1,9})$")


@dataclass(frozen=True)
class Predictions:
    """Predicted class per input and softmax probabilities ``(n, K)`` (classes in the head's order)."""

    class_names: List[str]
    labels: np.ndarray
    probabilities: np.ndarray
    logits: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Head:
    """A registered head: ``weights`` ``(d, K)`` float32, ``bias`` ``(K,)``, the feature set's global
    columns it reads (``selected``, in input order) with each input's tap (``selected_tap``), the
    normalisation rule, class names, hyper-parameters, metrics and lineage."""

    task: str
    version: int
    class_names: List[str]
    weights: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)
    selected: np.ndarray = field(repr=False)
    selected_tap: np.ndarray = field(repr=False)
    normalization: str
    featureset: str
    lineage: Dict[str, Any] = field(repr=False)
    summary: Dict[str, Any] = field(repr=False)
    body: Dict[str, Any] = field(repr=False)

    @property
    def reference(self) -> str:
        return f"{self.task}@v{self.version}"

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """The head's inputs from raw selected features ``(n, d)`` (columns in ``selected`` order):
        with ``per_tap_unit_l2_over_kept`` each tap's group scaled to unit L2 norm per row (a zero
        group stays zero); with ``raw_selected`` the values as read."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.selected):
            raise ValueError(f"head {self.reference} reads {len(self.selected)} features; got an array of shape {X.shape}")
        if self.normalization == "raw_selected":
            return X
        out = X.astype(np.float64)
        for tap in np.unique(self.selected_tap):
            cols = self.selected_tap == tap
            norms = np.sqrt(np.sum(out[:, cols] ** 2, axis=1, keepdims=True))
            out[:, cols] = np.divide(out[:, cols], norms, out=np.zeros_like(out[:, cols]), where=norms > 0)
        return out.astype(np.float32)

    def predict(self, X: np.ndarray) -> Predictions:
        """Applies the head to raw selected features ``(n, d)``: inputs, ``x W + b``, softmax."""
        x = self.inputs(X).astype(np.float64)
        logits = x @ self.weights.astype(np.float64) + self.bias.astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(shifted)
        p /= p.sum(axis=1, keepdims=True)
        return Predictions(self.class_names, logits.argmax(axis=1).astype(np.int64), p.astype(np.float32),
                           logits.astype(np.float32))

    def predict_features(self, features: np.ndarray) -> Predictions:
        """Applies the head to full rows of its feature set ``(n, width)``."""
        return self.predict(np.asarray(features)[:, self.selected])


class Registry:
    """The heads of a store. ``Registry(store)`` takes a ``Store`` or a path."""

    def __init__(self, store: Union[Store, str]):
        self.store = store if isinstance(store, Store) else Store(store)
        # A store that never had a head has no registry tables (None).
        self.dbs: Dict[str, Any] = {name: self.store.table(name) for name in REGISTRY_TABLES}

    def _scan(self, txn: lmdb.Transaction, table: str, prefix: bytes):
        db = self.dbs[table]
        if db is None:
            return
        cursor = txn.cursor(db=db)
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value

    # ------------------------------------------------------------------------------------------
    # Listing

    def heads(self, task: Optional[str] = None, tags: Sequence[str] = (), alias: Optional[str] = None,
              sort: Optional[str] = None, latest: bool = False, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Heads as ``h2t-store heads --json`` lists them: ``{"entry" (snake_case keys), "tags",
        "aliases"}`` with the same filters (``tags``: ``"key=value"`` or ``"key"``; all must match) and sort keys."""
        if sort is not None and sort not in SORT_KEYS:
            raise ValueError(f"unknown sort key '{sort}' (use one of {', '.join(SORT_KEYS)})")
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        with self.store.begin() as txn:
            allowed: Optional[set] = None
            for text in tags:
                key, eq, value = text.partition("=")
                prefix = b"k" + key.encode() + b"\0" + ((value.encode() + b"\0") if eq else b"")
                hits = set()
                for k, _ in self._scan(txn, "tags", prefix):
                    hits.add((k[:-5].rsplit(b"\0", 1)[1].decode(), struct.unpack(">I", k[-4:])[0]))
                allowed = hits if allowed is None else allowed & hits
            states = self._alias_states(txn, task)
            aliases_by_head: Dict[Tuple[str, int], List[str]] = {}
            for s in states:
                aliases_by_head.setdefault((s["task"], s["version"]), []).append(s["alias"])
            if alias is not None:
                hits = {(s["task"], s["version"]) for s in states if s["alias"] == alias}
                allowed = hits if allowed is None else allowed & hits
            entries = []
            prefix = b"" if task is None else task.encode() + b"\0"
            for key, value in self._scan(txn, "registry", prefix):
                if len(key) < 7 or key[-1] != _PART_ENTRY:
                    continue
                head_key = (key[:-6].decode(), struct.unpack(">I", key[-5:-1])[0])
                if allowed is not None and head_key not in allowed:
                    continue
                entries.append(_json(key, value, "registry entry"))
            tags_by_head: Dict[Tuple[str, int], List[Dict[str, str]]] = {}
            if entries:
                for _, value in self._scan(txn, "tags", b"h" + prefix):
                    tag = json.loads(value)
                    tags_by_head.setdefault((tag["task"], tag["version"]), []).append({"key": tag["key"], "value": tag["value"]})
        listings = [{"entry": {_snake(k): v for k, v in e.items()}, "tags": sorted(tags_by_head.get((e["task"], e["version"]), []), key=lambda t: t["key"]),
                     "aliases": sorted(aliases_by_head.get((e["task"], e["version"]), []))} for e in entries]
        if latest:
            last: Dict[str, int] = {}
            for i, listing in enumerate(listings):
                t = listing["entry"]["task"]
                if t not in last or listings[last[t]]["entry"]["version"] < listing["entry"]["version"]:
                    last[t] = i
            listings = [listings[i] for i in sorted(last.values())]
        listings = _sorted(listings, sort)
        return listings[:limit] if limit is not None else listings

    def aliases(self, task: Optional[str] = None) -> List[Dict[str, Any]]:
        """Current aliases (``task``, ``alias``, ``version``, ...), sorted by task and name."""
        with self.store.begin() as txn:
            return self._alias_states(txn, task)

    def _alias_states(self, txn: lmdb.Transaction, task: Optional[str]) -> List[Dict[str, Any]]:
        prefix = b"c" + (task.encode() + b"\0" if task is not None else b"")
        return [_json(k, v, "alias") for k, v in self._scan(txn, "aliases", prefix)]

    # ------------------------------------------------------------------------------------------
    # Resolving and loading

    def resolve(self, reference: str) -> Tuple[str, int]:
        """``NAME`` (latest live version), ``NAME@vN`` or ``NAME@alias`` to ``(task, version)``."""
        with self.store.begin() as txn:
            return self._resolve(txn, reference)

    def _resolve(self, txn: lmdb.Transaction, reference: str) -> Tuple[str, int]:
        task, at, selector = reference.partition("@")
        if not task or "\0" in task:
            raise ValueError(f"'{reference}' is not a head reference (NAME, NAME@vN or NAME@alias)")
        live, removed = [], []
        for key, value in self._scan(txn, "registry", task.encode() + b"\0"):
            if len(key) == len(task) + 6 and key[-1] == _PART_SUMMARY:
                version = struct.unpack(">I", key[-5:-1])[0]
                (removed if value.startswith(b'{"removedAt"') else live).append(version)
        if not live and not removed:
            raise NotFound(f"unknown task '{task}' in {self.store.path}")
        if not at:
            if not live:
                raise NotFound(f"task '{task}' has no live versions (all were removed)")
            return task, live[-1]
        number = _VERSION.match(selector)
        if number:
            v = int(number.group(1))
            if v in live:
                return task, v
            state = "was removed" if v in removed else "does not exist"
            raise NotFound(f"{task}@v{v} {state} (versions: {', '.join(f'v{x}' for x in live) or 'none'})")
        db = self.dbs["aliases"]
        raw = txn.get(b"c" + task.encode() + b"\0" + selector.encode(), db=db) if db is not None else None
        if raw is None:
            known = [s["alias"] for s in self._alias_states(txn, task)]
            raise NotFound(f"task '{task}' has no alias '{selector}' (aliases: {', '.join(known) or 'none'})")
        version = int(json.loads(raw)["version"])
        if version not in live:
            raise NotFound(f"{task}@{selector} points to v{version}, which was removed")
        return task, version

    def head(self, reference: str) -> Head:
        """The head ``reference`` selects, weights included."""
        with self.store.begin() as txn:
            task, version = self._resolve(txn, reference)
            base = task.encode() + b"\0" + struct.pack(">I", version) + b"\0"
            db = self.dbs["registry"]
            summary_raw, body_raw = txn.get(base[:-1] + bytes([_PART_SUMMARY]), db=db), txn.get(base[:-1] + bytes([_PART_BODY]), db=db)
        if summary_raw is None or body_raw is None:
            raise StoreFormatError(f"registry/{task}@v{version} has no {'summary' if summary_raw is None else 'body'}")
        summary = _json(base, summary_raw, "head summary")
        body = _json(base, body_raw, "head body")
        if summary.get("schema") != "h2t.head/1" or body.get("schema") != "h2t.head-body/1":
            raise StoreFormatError(f"registry/{task}@v{version} has record schema {summary.get('schema')}/{body.get('schema')}, "
                                   "which this reader does not know")
        rule = body["normalization"]["rule"]
        if rule not in RULES:
            raise H2TStoreError(f"{task}@v{version} uses normalisation rule '{rule}', which this reader does not know")
        classes = list(summary["classNames"])
        selection = body["selection"]
        selected = np.array([t["offset"] + i for t in selection for i in t["indices"]], dtype=np.int64)
        selected_tap = np.array([t["order"] for t in selection for _ in t["indices"]], dtype=np.int64)
        d, k = len(selected), len(classes)
        weights = np.asarray(body["weights"], dtype=np.float32)
        bias = np.asarray(body["bias"], dtype=np.float32)
        if weights.size != d * k or bias.size != k or int(summary["inputCount"]) != d:
            raise StoreFormatError(f"registry/{task}@v{version}: {weights.size} weights and {bias.size} biases "
                                   f"for {d} inputs and {k} classes")
        return Head(task, version, classes, weights.reshape(d, k), bias, selected, selected_tap, rule,
                    summary["lineage"]["featureSet"], summary["lineage"], summary, body)

    # ------------------------------------------------------------------------------------------
    # Prediction

    def _check_layout(self, head: Head) -> None:
        fs = self.store.feature_set(head.featureset)
        for tap in head.body["selection"]:
            stored = fs.taps[tap["order"]] if tap["order"] < len(fs.taps) else None
            if stored is None or stored["name"] != tap["tap"] or stored["offset"] != tap["offset"] or stored["width"] != tap["width"]:
                raise StoreFormatError(f"head {head.reference}: tap '{tap['tap']}' does not match feature set {fs.id[:12]}")

    def predict(self, head: Union[str, Head], dataset: Optional[str] = None, split: Optional[str] = None,
                examples: Optional[ExampleIds] = None, features: Optional[np.ndarray] = None) -> Predictions:
        """Predicts a stored split (``dataset`` + ``split``), stored ``examples``, or a raw
        ``features`` matrix (full rows of the head's feature set), reading only the head's columns
        from the store, as ``h2t-store predict`` does."""
        head = head if isinstance(head, Head) else self.head(head)
        given = [dataset is not None or split is not None, examples is not None, features is not None]
        if sum(given) != 1 or ((dataset is None) != (split is None)):
            raise ValueError("give exactly one input: dataset with split, examples, or features")
        if features is not None:
            return head.predict_features(features)
        self._check_layout(head)
        if examples is not None:
            X = self.store.read_examples(head.featureset, examples, head.selected)
        else:
            X, _ = self.store.read_split(head.featureset, dataset, split, head.selected)  # type: ignore[arg-type]
        return head.predict(X)


def _sorted(listings: List[Dict[str, Any]], key: Optional[str]) -> List[Dict[str, Any]]:
    if key in (None, "task"):
        return listings
    if key == "created":
        return sorted(listings, key=lambda l: l["entry"]["created_at"], reverse=True)

    def metric(listing: Dict[str, Any]) -> float:
        e = listing["entry"]
        if key == "test_accuracy":
            return e.get("test_accuracy", -1) if e.get("test_accuracy") is not None else -1
        if key == "cv_accuracy":
            return e["cv_accuracy"]
        if key == "gain_vs_probe":
            if e.get("test_accuracy") is not None and e.get("probe_test_accuracy") is not None:
                return e["test_accuracy"] - e["probe_test_accuracy"]
            return e["cv_accuracy"] - e["probe_cv_accuracy"] if e.get("probe_cv_accuracy") is not None else -1
        if key == "kept_features":
            return -e["input_count"]
        return e["version"]  # "version"

    return [l for _, l in sorted(enumerate(listings), key=lambda p: (-metric(p[1]), p[0]))]


def _snake(key: str) -> str:
    """A key as the CLI's ``--json`` writes it (Swift's ``convertToSnakeCase``): ``testAccuracy`` →
    ``test_accuracy``, ``weightsSHA256`` → ``weights_sha256``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", key).lower()


def _json(key: bytes, value: bytes, what: str) -> Dict[str, Any]:
    try:
        return json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StoreFormatError(f"{what} {key!r} is not valid JSON: {error}") from None
