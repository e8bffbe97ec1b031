"""Capture from any PyTorch model: hook its modules, pool every output with Head2Toe's rule on the
model's own device, and stream the pooled rows to ``h2t-store ingest --external``, which stores
them (``pip install h2t-store[torch]``).

Only pooled rows leave the device. Each chunk goes to the CLI as a safetensors file of pre-pooled
activations (``docs/external-activations.md``) that declares every tap's source shape, so the
stored backbone and feature sets are exactly those an ingest of the raw activations would create
(same ids), and a killed capture resumes like a killed ingest: examples already stored are
skipped before the forward pass.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import cli
from .errors import CaptureError, NotFound
from ._safetensors import write_safetensors
from .store import Store, example_id

#: The pooling rule capture implements (``Head2ToePooling`` in ``Sources/H2TCore/Pooling.swift``).
POOLING_RULE = ("head2toe-avgpool", 1)
#: Layer filter: module names, or a predicate on (name, module).
LayerFilter = Union[None, Sequence[str], Callable[[str, torch.nn.Module], bool]]


# ----------------------------------------------------------------------------------------------
# Head2Toe's pooling rule, in torch


def pooling_window(channels: int, width: int, target_size: int) -> Optional[int]:
    """The average-pooling window for a ``channels x H x width`` map; ``None`` means global pooling.
    ``C >= F_T``: global; else ``n = isqrt(F_T // C)``, ``p = W // n``; ``p == 0``: global."""
    if channels >= target_size:
        return None
    n = int(math.sqrt(target_size // channels))
    if n <= 0:
        return None
    p = width // n
    return None if p == 0 else p


def pooled_width(shape: Sequence[int], target_size: int) -> int:
    """Features a tap of per-example ``shape`` (``[C]`` or ``[C, H, W]``) pools to."""
    if len(shape) != 3:
        return int(np.prod(shape))
    c, h, w = shape
    p = pooling_window(c, w, target_size)
    return c if p is None else ((h - p) // p + 1) * ((w - p) // p + 1) * c


def pool(x: torch.Tensor, target_size: int) -> torch.Tensor:
    """Pools a batch ``[N, C]`` (passed through) or ``[N, C, H, W]`` to ``[N, features]`` in
    float32, features in channel-major order (``c, i, j``), on ``x``'s device."""
    x = x.float()
    if x.dim() == 2:
        return x
    n, c, h, w = x.shape
    p = pooling_window(c, w, target_size)
    if p is None:
        return x.mean(dim=(2, 3))
    if p > h:
        raise CaptureError(f"spatial map {list(x.shape[1:])} has fewer rows than the pooling window {p}")
    if p == 1:
        return x.reshape(n, -1)  # a 1x1 window keeps every value (a view: copy before the module's next in-place op)
    return F.avg_pool2d(x, kernel_size=p, stride=p).reshape(n, -1)


def split_output(name: str, output: Any) -> List[Tuple[str, torch.Tensor]]:
    """A hooked output as taps ``(name, [N, C] or [N, C, H, W])``: vectors and channel-first maps
    as they are; a token sequence ``[N, T, D]`` whose patch tokens form a square grid becomes the
    grid ``[N, D, g, g]`` (named as the module) plus, when there is one more token first, the class
    token as a vector (``name:cls``), as Head2Toe's reference treats vision transformers."""
    if not isinstance(output, torch.Tensor):
        raise CaptureError(f"module '{name}' returned {type(output).__name__}, not a tensor; "
                           "pass layers=... naming modules whose outputs are tensors")
    if not (output.is_floating_point()):
        raise CaptureError(f"module '{name}' returned a {output.dtype} tensor; only floating-point outputs can be pooled")
    if output.dim() == 1:
        return [(name, output.reshape(-1, 1))]
    if output.dim() in (2, 4):
        return [(name, output)]
    if output.dim() == 3:
        n, t, d = output.shape
        g = math.isqrt(max(t - 1, 0))
        if t > 1 and g * g == t - 1:
            grid = output[:, 1:].reshape(n, g, g, d).permute(0, 3, 1, 2)
            return [(name + ":cls", output[:, 0]), (name, grid)]
        g = math.isqrt(t)
        if g * g == t:
            return [(name, output.reshape(n, g, g, d).permute(0, 3, 1, 2))]
    raise CaptureError(f"module '{name}' returned shape {list(output.shape)}; capture pools [N, C], [N, C, H, W] "
                       "and token sequences [N, T, D] with a square patch grid; pass layers=... to leave it out")


# ----------------------------------------------------------------------------------------------
# Identity: manifests as the Swift store writes them


def canonical_json(value: Any) -> bytes:
    """The store's canonical JSON (``schemas/store-format.md`` section 3) for manifests made of
    strings, integers, booleans, lists and objects: UTF-8, keys sorted, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state_dict: every entry's name, dtype, shape and bytes, by name."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}\0{t.dtype}\0{list(t.shape)}\0".encode("utf-8"))
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Codec:
    """Tile codec and layout of the feature sets (the CLI's ``--dtype``, ``--zstd-level``,
    ``--frame-width``, ``--column-block``)."""

    dtype: str = "bfloat16"
    zstd_level: int = 1
    frame_width: int = 4
    column_block: int = 1024

    @property
    def torch_dtype(self) -> torch.dtype:
        """The stored dtype in torch: the store rounds float32 to it (to nearest, ties to even)
        anyway, so pooled values are rounded on their device, as soon as they are pooled: the
        same bits are stored, and half the bytes are concatenated, checked and moved."""
        return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.dtype, torch.float32)

    def transfer(self, rows: torch.Tensor) -> np.ndarray:
        """Pooled rows (float32 or already in the stored dtype) as a numpy array in the stored
        dtype (bfloat16 as uint16 bits), on the CPU."""
        rows = rows.to(self.torch_dtype)
        if self.dtype == "bfloat16":
            return rows.view(torch.int16).to("cpu").numpy().view(np.uint16)
        return rows.to("cpu").numpy()

    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype ``transfer`` returns (bfloat16 travels as its uint16 bits)."""
        return np.dtype({"bfloat16": np.uint16, "float16": np.float16}.get(self.dtype, np.float32))

    def manifest(self) -> Dict[str, Any]:
        return {"dtype": self.dtype, "compressed": self.zstd_level > 0, "level": max(self.zstd_level, 1),
                "frameWidth": self.frame_width}

    def arguments(self) -> List[str]:
        return ["--dtype", self.dtype, "--zstd-level", str(self.zstd_level), "--frame-width", str(self.frame_width),
                "--column-block", str(self.column_block)]


def backbone_manifest(name: str, weights_sha256: str, taps: Sequence[Tuple[str, List[int]]]) -> Dict[str, Any]:
    """The backbone manifest ``h2t-store ingest --external NAME`` records for these taps."""
    return {"schema": "h2t.backbone/1", "architecture": f"external:{name}", "weightsSHA256": weights_sha256,
            "preprocessing": {"layout": "nchw"}, "taps": [{"name": n, "shape": list(s)} for n, s in taps]}


def tap_starts(taps: Sequence[Tuple[str, List[int]]], target_size: int) -> List[int]:
    """Each tap's first column in a row pooled at ``target_size``, then the row's width."""
    starts = [0]
    for _, shape in taps:
        starts.append(starts[-1] + pooled_width(shape, target_size))
    return starts


def featureset_manifest(backbone_id: str, taps: Sequence[Tuple[str, List[int]]], target_size: int, codec: Codec) -> Dict[str, Any]:
    """The feature-set manifest the Swift store lays out for a backbone and target size."""
    starts = tap_starts(taps, target_size)
    columns = [{"name": n, "sourceShape": list(s), "offset": starts[i], "width": starts[i + 1] - starts[i]}
               for i, (n, s) in enumerate(taps)]
    return {"schema": "h2t.featureset/1", "backbone": backbone_id, "targetSize": target_size, "codec": codec.manifest(),
            "columnBlock": codec.column_block, "taps": columns, "width": starts[-1]}


def manifest_id(manifest: Dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


# ----------------------------------------------------------------------------------------------
# Hooks


class _Hooks:
    """Forward hooks that pool each output as the module produces it, so a batch's full
    activations never accumulate. A module called several times in one forward gives one tap
    per call (``name``, ``name#2``, ...)."""

    def __init__(self, model: torch.nn.Module, layers: LayerFilter, target_sizes: Sequence[int], dtype: torch.dtype):
        self.target_sizes = list(target_sizes)
        self.dtype = dtype
        named = list(model.named_modules())
        if layers is None:
            chosen = [(n, m) for n, m in named if not any(True for _ in m.children())]
        elif callable(layers):
            chosen = [(n, m) for n, m in named if layers(n, m)]
        else:
            by_name = dict(named)
            unknown = [n for n in layers if n not in by_name]
            if unknown:
                raise NotFound(f"model has no module '{unknown[0]}' (e.g. {', '.join(n for n, _ in named[1:6])})")
            chosen = [(n, by_name[n]) for n in layers]
        if not chosen:
            raise CaptureError("no module to hook: the layer filter selects nothing")
        self.handles = [m.register_forward_hook(self._hook(n or type(m).__name__)) for n, m in chosen]
        self.reset()

    def reset(self, rows: Optional[Dict[int, torch.Tensor]] = None,
              layout: Optional[Tuple[List[Tuple[str, List[int]]], Dict[int, List[int]]]] = None) -> None:
        """Starts a forward pass. With ``rows`` (per target size, the ``[n, width]`` rows this
        batch fills, in the stored dtype; then ``layout`` is the taps of the first batch and each
        tap's first column per target size), each pooled output is written straight into its
        columns: no per-tap copy, no concatenation. Without, pooled outputs are collected."""
        self.calls: Dict[str, int] = {}
        self.taps: List[Tuple[str, List[int]]] = []
        self.pooled: Dict[int, List[torch.Tensor]] = {f: [] for f in self.target_sizes}
        self.rows = rows
        self.layout = layout

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            count = self.calls.get(name, 0) + 1
            self.calls[name] = count
            for tap, x in split_output(name if count == 1 else f"{name}#{count}", output):
                index = len(self.taps)
                self.taps.append((tap, list(x.shape[1:])))
                if self.rows is not None:
                    assert self.layout is not None
                    expected = self.layout[0]
                    if index >= len(expected) or expected[index] != self.taps[-1]:
                        raise CaptureError(f"the hooked taps changed between batches (first: {len(expected)} taps; "
                                           f"now tap {index} is '{tap}' {list(x.shape[1:])})")
                for f in self.target_sizes:
                    try:
                        pooled = pool(x.detach(), f)
                    except CaptureError as error:
                        raise CaptureError(f"tap '{tap}': {error}") from None
                    if self.rows is not None:
                        assert self.layout is not None
                        # Rounded to the stored dtype as it is copied into place.
                        start = self.layout[1][f][index]
                        flat = pooled.reshape(len(pooled), -1)
                        self.rows[f][:, start:start + flat.shape[1]].copy_(flat)
                    else:
                        # A copy in the stored dtype: the module's output may change in place later
                        # (e.g. a ReLU(inplace=True) after it).
                        self.pooled[f].append(pooled.to(self.dtype, copy=True))
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


# ----------------------------------------------------------------------------------------------
# Safetensors chunk files


def write_chunk(path: str, rows: Dict[int, Union[np.ndarray, Sequence[np.ndarray]]], taps: Sequence[Tuple[str, List[int]]],
                names: Sequence[str], labels: Optional[Sequence[int]], class_names: Optional[Sequence[str]],
                overwrite_in_place: bool = False) -> None:
    """A safetensors file of pre-pooled rows: tensor ``h2t.pooled/F`` (examples x width; float32,
    float16, or bfloat16 as uint16 bits; an array or a list of arrays stacked along the examples)
    per target size and the metadata
    ``docs/external-activations.md`` describes."""
    metadata = {"h2t.pooled": json.dumps({"taps": [{"name": n, "shape": list(s)} for n, s in taps]}),
                "example_ids": json.dumps(list(names))}
    if labels is not None:
        metadata["labels"] = json.dumps([int(l) for l in labels])
        metadata["class_names"] = json.dumps(list(class_names or []))
    write_safetensors(path, {f"h2t.pooled/{size}": m for size, m in rows.items()}, metadata, overwrite_in_place)


# ----------------------------------------------------------------------------------------------
# Shards (``docs/scaling-out.md``)


def parse_shard(spec: Union[str, Tuple[int, int]], environ: Optional[Dict[str, str]] = None) -> Tuple[int, int]:
    """``(K, N)`` from ``"K/N"``, ``(K, N)`` or ``"auto/N"`` (K from ``SLURM_ARRAY_TASK_ID`` less
    ``SLURM_ARRAY_TASK_MIN``), with the CLI's rules: ``N >= 1`` and ``0 <= K < N``."""
    env = os.environ if environ is None else environ
    if isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(v, int) for v in spec):
        k, n = spec
    elif isinstance(spec, str) and spec.count("/") == 1:
        head, tail = spec.split("/")
        try:
            n = int(tail)
        except ValueError:
            raise ValueError(f"shard '{spec}' is not K/N or auto/N (e.g. 0/4)") from None
        if head == "auto":
            task = env.get("SLURM_ARRAY_TASK_ID", "")
            if not task.strip().lstrip("-").isdigit():
                raise ValueError(f"shard 'auto/{n}' takes K from SLURM_ARRAY_TASK_ID, which is not set to a number "
                                 "(run it inside an sbatch --array job, or give K)")
            first = env.get("SLURM_ARRAY_TASK_MIN", "0")
            k = int(task) - (int(first) if first.strip().lstrip("-").isdigit() else 0)
        else:
            try:
                k = int(head)
            except ValueError:
                raise ValueError(f"shard '{spec}': K must be a number or 'auto'") from None
    else:
        raise ValueError(f"shard {spec!r} is not K/N or auto/N (e.g. '0/4')")
    if n < 1:
        raise ValueError(f"shard {k}/{n}: N must be at least 1")
    if not 0 <= k < n:
        raise ValueError(f"shard {k}/{n}: K must be in 0...{n - 1} (shards are numbered from 0)")
    return k, n


def shard_range(total: int, k: int, n: int) -> range:
    """Shard K of N of ``total`` inputs: the CLI's contiguous rule (``schemas/store-format.md`` §7)."""
    return range(total * k // n, total * (k + 1) // n)


def _shard_loader(loader: Any, k: int, n: int) -> Tuple[Any, int, str, bool]:
    """A loader over shard K of N of ``loader``'s dataset (same batch size, workers and collate
    function), the dataset's length, the name of the run for the plan, and whether the shard is
    empty (more shards than inputs: the loader then holds the first input, only to learn the
    taps; the shard is sealed empty, as the CLI seals an empty shard)."""
    from torch.utils.data import DataLoader, IterableDataset, SequentialSampler, Subset

    if not isinstance(loader, DataLoader):
        raise CaptureError(f"shard= needs a torch DataLoader over a map-style dataset, got {type(loader).__name__}")
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise CaptureError(f"shard= needs a dataset of known length (map-style); {type(dataset).__name__} has none")
    if not isinstance(loader.sampler, SequentialSampler) or loader.batch_size is None:
        raise CaptureError("shard= needs a loader that reads its dataset in order in batches (shuffle=False, no sampler or batch_sampler)")
    if loader.drop_last:
        raise CaptureError("shard= needs drop_last=False (each shard would drop other examples than a single run)")
    total = len(dataset)
    if total == 0:
        raise CaptureError("shard=: the loader's dataset is empty")
    indices = shard_range(total, k, n)
    part = DataLoader(Subset(dataset, indices or range(1)), batch_size=loader.batch_size, shuffle=False,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn, generator=loader.generator,
                      prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers)
    return part, total, f"python-capture:{type(dataset).__module__}.{type(dataset).__qualname__}", not indices


# ----------------------------------------------------------------------------------------------
# Capture


@dataclass
class CaptureSummary:
    """What a capture did."""

    backbone: str
    featuresets: Dict[int, str]
    examples_seen: int = 0
    examples_computed: int = 0
    examples_skipped: int = 0
    seconds: float = 0.0
    taps: List[Tuple[str, List[int]]] = field(default_factory=list)
    #: For ``shard=``: the CLI's report of the shard (``shard``, ``shards``, ``plan``, ``state``:
    #: ``started``, ``resumed`` or ``already_sealed``, ``sealed``, ``rows``, ``items``, ...).
    shard: Optional[Dict[str, Any]] = None


class _Progress:
    def __init__(self, total: Optional[int], enabled: bool):
        self.total, self.enabled, self.started, self.last = total, enabled, time.monotonic(), 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.2):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        of = f"/{self.total}" if self.total else ""
        sys.stderr.write(f"\rcapture: {done}{of} examples, {rate:.0f}/s" + ("\n" if final else ""))
        sys.stderr.flush()


def _batch_parts(batch: Any) -> Tuple[torch.Tensor, Optional[Sequence[Any]], Optional[Sequence[Any]]]:
    """``x``, or ``(x, labels)``, or ``(x, labels, ids)`` from a loader batch."""
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor) and len(batch) <= 3:
        labels = batch[1] if len(batch) > 1 else None
        ids = batch[2] if len(batch) > 2 else None
        return batch[0], labels, ids
    raise CaptureError(f"loader batches must be a tensor, (inputs, labels) or (inputs, labels, ids); got {type(batch).__name__}")


def _names(x: torch.Tensor, ids: Optional[Sequence[Any]]) -> List[str]:
    """Example names: the loader's ids, else the SHA-256 of each input's bytes (stable, so a resumed
    capture recognises what it stored)."""
    if ids is not None:
        names = [str(i.item() if isinstance(i, torch.Tensor) else i) for i in ids]
        if len(names) != len(x):
            raise CaptureError(f"a batch has {len(x)} inputs but {len(names)} ids")
        return names
    flat = x.detach().to("cpu").contiguous().reshape(len(x), -1)
    raw = flat.view(torch.uint8).numpy() if flat.dtype != torch.uint8 else flat.numpy()
    return ["input-sha256:" + hashlib.sha256(row.tobytes()).hexdigest() for row in raw]


def _labels(labels: Optional[Sequence[Any]], n: int, class_names: Optional[List[str]]) -> Optional[np.ndarray]:
    if labels is None:
        return None
    if class_names is None:
        raise CaptureError("the loader yields labels: give class_names=[...] (or use a dataset with .classes)")
    if isinstance(labels, torch.Tensor):
        values = labels.detach().to("cpu").reshape(-1).tolist()
    else:
        values = list(labels)
    out = []
    for v in values:
        if isinstance(v, str):
            if v not in class_names:
                raise CaptureError(f"label '{v}' is not one of the classes {class_names}")
            out.append(class_names.index(v))
        else:
            if not 0 <= int(v) < len(class_names):
                raise CaptureError(f"label {int(v)} is outside the {len(class_names)} classes")
            out.append(int(v))
    if len(out) != n:
        raise CaptureError(f"a batch has {n} inputs but {len(out)} labels")
    return np.asarray(out, dtype=np.int64)


def capture(model: torch.nn.Module, loader: Iterable[Any], *, store: Union[str, os.PathLike], dataset: str, split: str,
            target_sizes: Sequence[int] = (8192,), layers: LayerFilter = None, name: Optional[str] = None,
            class_names: Optional[Sequence[str]] = None, chunk_size: int = 512, device: Optional[Union[str, torch.device]] = None,
            codec: Codec = Codec(), binary: Optional[str] = None, progress: Optional[bool] = None,
            shard: Optional[Union[str, Tuple[int, int]]] = None) -> CaptureSummary:
    """Runs ``model`` over ``loader`` and stores every hooked output, pooled with Head2Toe's rule
    for each of ``target_sizes``, as dataset ``dataset``/``split`` of the store at ``store``.

    - Hooks every leaf module, or the modules ``layers`` names (a list of names or a predicate).
    - Loader batches: ``x``, ``(x, labels)`` or ``(x, labels, ids)``; without ids an example is
      named by the SHA-256 of its input. Labels index ``class_names`` (default: the loader's
      dataset's ``.classes``).
    - The backbone is ``external:NAME`` (``name`` defaults to the model's class path) with the
      SHA-256 of its state_dict as weights digest; the model runs in eval mode under
      ``torch.inference_mode`` and is put back in its mode afterwards.
    - Examples already stored (in every feature set and the split) are skipped before the forward
      pass; memory is bounded by ``chunk_size`` pooled rows (one chunk pooling, one being stored).
    - Non-tensor outputs and NaN/Inf raise ``CaptureError`` naming the module and example; the
      chunks before it stay stored (the store is valid and the capture resumable).
    - ``shard="K/N"`` (or ``"auto/N"``, K from ``SLURM_ARRAY_TASK_ID``) captures only shard K of N
      of the loader's dataset (the CLI's contiguous ranges; the loader must be a ``DataLoader``
      reading a map-style dataset in order) into a shard store of its own, sealed at the end, for
      ``h2t-store merge``. Re-running a sealed shard stops after the first forward pass (needed to
      identify the feature sets) and stores nothing; an unsealed one resumes.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    sizes = list(dict.fromkeys(int(s) for s in target_sizes))
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"target_sizes must be positive integers, got {list(target_sizes)}")
    store_path = os.fspath(store)
    executable = cli.binary(binary)
    if device is None:
        parameter = next(iter(model.parameters()), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    if class_names is None:
        classes = getattr(getattr(loader, "dataset", None), "classes", None)
        class_names = list(map(str, classes)) if classes is not None else None
    class_list = list(class_names) if class_names is not None else None
    name = name or f"{type(model).__module__}.{type(model).__qualname__}"
    shard_arguments: List[str] = []
    empty_shard = False
    if shard is not None:
        k, n = parse_shard(shard)
        loader, run_total, run_name, empty_shard = _shard_loader(loader, k, n)
        shard_arguments = ["--shard", f"{k}/{n}", "--shard-total", str(run_total), "--shard-plan", run_name]
    weights = state_dict_sha256(model)
    total = len(loader.dataset) if hasattr(loader, "dataset") and hasattr(loader.dataset, "__len__") else None  # type: ignore[attr-defined]
    bar = _Progress(total, sys.stderr.isatty() if progress is None else progress)
    started = time.monotonic()

    hooks = _Hooks(model, layers, sizes, codec.torch_dtype)
    was_training = model.training
    model.eval()
    scratch = _ChunkFile()
    summary: Optional[CaptureSummary] = None
    layout: Optional[Tuple[List[Tuple[str, List[int]]], Dict[int, List[int]]]] = None
    buffers = _ChunkRows({}, codec, 0, enabled=False)  # set up once the first batch gives the taps
    reader: Optional[Store] = None
    pending: Optional[Tuple[subprocess.Popen, str, List[str]]] = None
    chunk: Dict[str, Any] = {"rows": {f: [] for f in sizes}, "names": [], "labels": [], "count": 0}
    seen = 0
    labelled = False

    def finish_pending() -> Optional[Dict[str, Any]]:
        nonlocal pending
        if pending is None:
            return None
        process, _, arguments = pending
        out, err = process.communicate()
        pending = None
        result = cli.parse_result(arguments, process.returncode, out, err)
        got = {fs["target_size"]: fs["id"] for fs in result["feature_sets"]}
        if summary is not None and (result["backbone"] != summary.backbone or got != summary.featuresets):
            raise CaptureError(f"h2t-store stored backbone {result['backbone'][:12]} / feature sets {got}, but capture "
                               f"expected {summary.backbone[:12]} / {summary.featuresets}: the pooling layouts disagree")
        if summary is not None and result.get("shard") is not None:
            # Every part after the probe finds the shard begun: the run's state is the probe's.
            state = summary.shard["state"] if summary.shard is not None else result["shard"]["state"]
            summary.shard = {**result["shard"], "state": state}
        return result

    def flush(final: bool = False, probe: bool = False) -> None:
        """Hands the chunk to the CLI (in the background). A shard's parts leave it open except the
        final one, which seals it (even with no rows: a resumed shard may have stored them all);
        ``probe`` sends no rows, to learn whether the shard is sealed before anything is computed."""
        nonlocal pending
        if not chunk["count"] and not (shard_arguments and (final or probe)):
            return
        finish_pending()
        assert summary is not None
        # One file, written over by each chunk once the CLI has stored the previous one: its pages
        # are reused rather than allocated anew for every chunk.
        path = scratch.path
        assert layout is not None
        # The chunk's rows as pooled into place, or each batch's rows in turn (no concatenated copy).
        rows = {f: [buffers.view(f, chunk["count"])] if buffers.enabled else
                chunk["rows"][f] or [np.zeros((0, layout[1][f][-1]), codec.numpy_dtype())] for f in sizes}
        labels = np.concatenate(chunk["labels"]) if chunk["labels"] else (np.zeros(0, np.int64) if labelled else None)
        write_chunk(path, rows, summary.taps, chunk["names"], labels, class_list, overwrite_in_place=True)
        arguments = ["ingest", "--external", name, "--weights-sha256", weights, "--dataset", dataset, "--split", split,
                     *[a for f in sizes for a in ("--target-size", str(f))], *codec.arguments(),
                     "--segment-rows", str(chunk_size), *shard_arguments, *(["--shard-open"] if shard_arguments and not final else []),
                     "--store", store_path, "--json", path]
        process = subprocess.Popen([executable, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   pass_fds=scratch.pass_fds)
        pending = (process, path, arguments)
        chunk.update(rows={f: [] for f in sizes}, names=[], labels=[], count=0)

    try:
        with torch.inference_mode():
            for batch in loader:
                x, labels, ids = _batch_parts(batch)
                names = _names(x, ids)
                y = _labels(labels, len(x), class_list)
                seen += len(x)
                need = np.ones(len(x), dtype=bool)
                if summary is not None:
                    # Only a store that existed before this capture's first chunk can hold examples
                    # of later batches; one the CLI is creating now is not read (its file may exist
                    # before its first commit).
                    if reader is not None:
                        need = ~reader.stored(list(summary.featuresets.values()), [example_id(n) for n in names], dataset, split)
                if not need.any():
                    summary.examples_skipped += len(x)  # type: ignore[union-attr]
                    bar.update(seen)
                    continue
                pick = torch.from_numpy(np.nonzero(need)[0])
                inputs = (x if need.all() else x[pick]).to(device)
                direct = buffers.rows(chunk["count"], len(inputs))
                hooks.reset(direct, layout)
                model(inputs)
                if not hooks.taps:
                    raise CaptureError("no hooked module ran during the forward pass")
                if summary is None:
                    backbone_id = manifest_id(backbone_manifest(name, weights, hooks.taps))
                    ids_by_size = {f: manifest_id(featureset_manifest(backbone_id, hooks.taps, f, codec)) for f in sizes}
                    summary = CaptureSummary(backbone_id, ids_by_size, taps=list(hooks.taps))
                    layout = (summary.taps, {f: tap_starts(summary.taps, f) for f in sizes})
                    buffers = _ChunkRows({f: layout[1][f][-1] for f in sizes}, codec, chunk_size,
                                         enabled=torch.device(device).type == "cpu")
                    labelled = y is not None
                    if shard_arguments:
                        flush(probe=True)
                        finish_pending()
                        if empty_shard or (summary.shard is not None and summary.shard["state"] == "already_sealed"):
                            seen = 0
                            break
                    if os.path.isfile(os.path.join(store_path, "data.mdb")):
                        reader = Store(store_path)
                        # The first batch ran whole; what of it is stored is skipped from here on.
                elif hooks.taps != summary.taps:
                    raise CaptureError(f"the hooked taps changed between batches (first: {len(summary.taps)} taps, "
                                       f"now {len(hooks.taps)}; e.g. {_first_difference(summary.taps, hooks.taps)})")
                picked = [names[i] for i in np.nonzero(need)[0]]
                for f in sizes:
                    row = direct[f] if direct is not None else torch.cat([p.reshape(len(picked), -1) for p in hooks.pooled[f]], dim=1)
                    if not _all_finite(row):
                        finite = torch.isfinite(row).all(dim=1)
                        bad = int((~finite).nonzero()[0, 0])
                        column = int((~torch.isfinite(row[bad])).nonzero()[0, 0])
                        raise CaptureError(f"NaN or Inf in tap '{_tap_of(summary.taps, column, f)}' for example "
                                           f"'{picked[bad]}'; nothing of its chunk was stored")
                    if not buffers.enabled:
                        chunk["rows"][f].append(codec.transfer(row))
                    elif direct is None:  # the first batch, pooled before the layout was known
                        buffers.rows(chunk["count"], len(picked))[f].copy_(row)
                chunk["names"].extend(picked)
                if y is not None:
                    chunk["labels"].append(y[need])
                chunk["count"] += len(picked)
                summary.examples_skipped += int((~need).sum())
                summary.examples_computed += len(picked)
                if chunk["count"] >= chunk_size:
                    flush()
                bar.update(seen)
        if not (summary is not None and summary.shard is not None and summary.shard["state"] == "already_sealed"):
            flush(final=True)
            finish_pending()
    finally:
        hooks.remove()
        model.train(was_training)
        if pending is not None:
            # An error elsewhere: the chunk handed over is still stored (as a killed ingest would).
            pending[0].communicate()
        if reader is not None:
            reader.close()
        scratch.close()
    bar.update(seen, final=True)
    if summary is None:
        raise CaptureError("the loader yielded no batches")
    summary.examples_seen = seen
    summary.seconds = time.monotonic() - started
    if summary.shard is not None and summary.shard["state"] == "already_sealed":
        summary.examples_seen = summary.examples_computed = summary.examples_skipped = 0
        sys.stderr.write(f"capture: shard {summary.shard['shard']}/{summary.shard['shards']} of plan {summary.shard['plan'][:12]} "
                         f"in {store_path} is already sealed: nothing to do\n")
    return summary


class _ChunkFile:
    """Where a chunk waits for the CLI to store it. On Linux, an anonymous memory file
    (``memfd_create``) that the CLI reads as ``/dev/fd/N``: it lives in memory, is not bounded by
    the size of /dev/shm (64 MB in a default Docker container), and is freed with the last process
    holding it, so a killed capture leaves nothing behind. Elsewhere, a file in a temporary folder
    removed at the end."""

    def __init__(self) -> None:
        self.fd: Optional[int] = None
        self.folder: Optional[str] = None
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("h2t-capture-chunk", os.MFD_CLOEXEC)
            if os.path.exists(f"/dev/fd/{fd}"):
                self.fd = fd
            else:  # no /proc: the CLI could not open it by name
                os.close(fd)
        if self.fd is None:
            self.folder = tempfile.mkdtemp(prefix="h2t-capture-")

    @property
    def path(self) -> str:
        return f"/dev/fd/{self.fd}" if self.fd is not None else os.path.join(self.folder or "", "chunk.safetensors")

    @property
    def pass_fds(self) -> Tuple[int, ...]:
        """The descriptors the CLI must inherit to open ``path``."""
        return (self.fd,) if self.fd is not None else ()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class _ChunkRows:
    """A chunk's pooled rows on the CPU, per target size, in the stored dtype: the hooks pool each
    batch straight into its rows, and the chunk file is written from them. Reused chunk after
    chunk (grown when a batch overshoots the chunk size). Off when the model is not on the CPU
    (each tap's rows would cross to the host on their own; they are concatenated there first)."""

    def __init__(self, widths: Dict[int, int], codec: Codec, chunk_size: int, enabled: bool):
        self.widths, self.codec, self.enabled = widths, codec, enabled
        self.buffers = {f: torch.empty((chunk_size if enabled else 0, w), dtype=codec.torch_dtype) for f, w in widths.items()}

    def rows(self, first: int, count: int) -> Optional[Dict[int, torch.Tensor]]:
        """Rows ``first ..< first + count`` of every target size (``None`` when off)."""
        if not self.enabled:
            return None
        for f, buffer in self.buffers.items():
            if first + count > len(buffer):
                grown = torch.empty((first + count, self.widths[f]), dtype=buffer.dtype)
                grown[:first] = buffer[:first]
                self.buffers[f] = grown
        return {f: buffer[first:first + count] for f, buffer in self.buffers.items()}

    def view(self, target_size: int, count: int) -> np.ndarray:
        """The first ``count`` rows of ``target_size`` as numpy, in the dtype ``Codec.transfer`` gives."""
        return self.codec.transfer(self.buffers[target_size][:count])


def _all_finite(rows: torch.Tensor) -> bool:
    """Whether every value is finite, in one pass: the minimum and maximum are finite exactly
    when no value is infinite, and ``aminmax`` propagates NaN."""
    if rows.numel() == 0:
        return True
    low, high = torch.aminmax(rows)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def _tap_of(taps: Sequence[Tuple[str, List[int]]], column: int, target_size: int) -> str:
    return taps[min(bisect.bisect_right(tap_starts(taps, target_size), column) - 1, len(taps) - 1)][0]


def _first_difference(a: Sequence[Tuple[str, List[int]]], b: Sequence[Tuple[str, List[int]]]) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"{x[0]} {x[1]} versus {y[0]} {y[1]}"
    return f"{len(a)} versus {len(b)} taps"
