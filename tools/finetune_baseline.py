#!/usr/bin/env python3
"""Full fine-tuning baseline for the main job, and its cost against Head2Toe's, in one run.

Fine-tunes every weight of MobileNetV2 and EfficientNet-Lite0 from the same pinned ImageNet
checkpoints the store's backbones load (``torch.load(weights_only=True)``), on the same images
with the same preprocessing as ``h2t-store ingest --fashion-mnist`` (28x28 gray resized to 64x64
with the rule of Sources/H2TBackbone/Images/Preprocessing.swift, gray replicated, then
``(x / 255 - mean) / std`` with the network's statistics), on the first 1,000 training images,
tested once on all 10,000 test images: the VTAB-1k protocol of ``tools/run-main``.

Recipe: SGD with momentum 0.9, no weight decay, cosine decay to 0 over a fixed number of steps,
batch 64 drawn from a seeded shuffle, no augmentation (so the inputs are exactly the store's),
cross-entropy, a fresh seeded 10-way classifier, BatchNorm in training mode (momentum 0.1). The
learning rate is chosen on an 800/200 split of the 1,000 (VTAB-1k's train800/val200: the first
800 and the last 200), then the network is fine-tuned again on all 1,000 and tested once.

Cost (``--compare-h2t BIN``): in the same run, times ``h2t-store ingest`` (the one backbone pass
over the 11,000 images) and ``fit`` (the whole cross-validation sweep, final fits and test) into
a fresh store, then a second task on the same images (a 4-class relabelling: tops, trousers,
footwear, bags) that Head2Toe serves from the stored features. Multiply-accumulates are counted
with forward hooks on every convolution and linear layer at the input size; a training step
counts 3x the forward MACs (forward, and a backward pass of about twice the forward).

Usage:
  tools/finetune_baseline.py run [--networks mobilenet_v2,efficientnet_lite0] [--steps 80]
        [--lrs 0.01,0.03,0.1] [--compare-h2t .build/release/h2t-store] [--out results.json] [--json]
  tools/finetune_baseline.py quick       # a few steps on a few images; the test suite runs it
  tools/finetune_baseline.py verify      # torch forward vs ONNX Runtime (tools/onnx_reference.py)

Missing weights or images: one line naming ``tools/fetch-artifacts``, exit 1. Threads: torch's
default (one per core), with sleeping (passive) OpenMP waits unless OMP_WAIT_POLICY says otherwise.
"""

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

# OpenMP threads that spin while waiting stall each other when other processes hold the cores;
# sleeping waiters cost nothing on an idle machine. Set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)

NETWORKS = {
    # name: (weights file under the cache, sha256, mean, std)
    "mobilenet_v2": ("weights/mobilenet_v2-b0353104.pth",
                     "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                     (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # TF EfficientNet-Lite preprocessing, as the Swift description: (x - 127) / 128 on 0...255.
    "efficientnet_lite0": ("weights/efficientnet-lite0-57934424.pth",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                           (127 / 255,) * 3, (128 / 255,) * 3),
}
FASHION = {"train": ("fashion-mnist/train-images-idx3-ubyte.gz", "fashion-mnist/train-labels-idx1-ubyte.gz"),
           "test": ("fashion-mnist/t10k-images-idx3-ubyte.gz", "fashion-mnist/t10k-labels-idx1-ubyte.gz")}
# The second task: Fashion-MNIST's 10 classes folded into tops, trousers, footwear and bags.
COARSE = [0, 1, 0, 0, 0, 2, 0, 2, 3, 2]
COARSE_NAMES = "top,trouser,footwear,bag"
INPUT_SIZE = 64


class InputError(Exception):
    """Bad input: reported as one line, exit 1."""


def cache_dir(explicit=None):
    return explicit or os.environ.get("H2T_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "h2t-store")


def artefact(cache, relative, what):
    path = os.path.join(cache, relative)
    if not os.path.exists(path):
        raise InputError(f"{path}: missing {what}; run tools/fetch-artifacts")
    return path


# ---------------------------------------------------------------------------------------------
# Images: the store's preprocessing.

def read_idx(path, limit=None):
    """uint8 array [N, rows, cols] (images) or [N] (labels) from a gzip'd IDX file."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise InputError(f"{path}: not a readable gzip IDX file ({error})")
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise InputError(f"{path}: not an unsigned-byte IDX file")
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise InputError(f"{path}: {body.size} bytes of data, header says {shape}")
    array = body.reshape(shape)
    return array[:limit] if limit is not None else array


def resize_matrix(n_in, n_out):
    """[n_out, n_in] weights of the store's resize rule on one axis (tools/image_reference.py)."""
    from image_reference import axis_taps
    matrix = np.zeros((n_out, n_in), np.float64)
    for i, (first, weights) in enumerate(axis_taps(n_in, n_out)):
        matrix[i, first:first + len(weights)] = weights
    return matrix


def preprocess(gray, network, size=INPUT_SIZE):
    """uint8 [N, h, w] gray images -> float32 [N, 3, size, size], as `Preprocessing.tensor`."""
    _, _, mean, std = NETWORKS[network]
    rows, cols = resize_matrix(gray.shape[1], size), resize_matrix(gray.shape[2], size)
    resized = np.einsum("yh,nhw,xw->nyx", rows, gray.astype(np.float64), cols).astype(np.float32)
    out = np.empty((gray.shape[0], 3, size, size), np.float32)
    for c in range(3):
        scale, shift = np.float32(1 / (255 * std[c])), np.float32(-mean[c] / std[c])
        out[:, c] = resized * scale + shift
    return out


def fashion(cache, split, limit=None):
    images, labels = FASHION[split]
    x = read_idx(artefact(cache, images, f"Fashion-MNIST {split} images"), limit)
    y = read_idx(artefact(cache, labels, f"Fashion-MNIST {split} labels"), limit)
    if len(x) != len(y):
        raise InputError(f"Fashion-MNIST {split}: {len(x)} images but {len(y)} labels")
    return x, y.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Networks.

def load_state(cache, network):
    import torch
    relative, digest, _, _ = NETWORKS[network]
    path = artefact(cache, relative, f"{network} weights")
    actual = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if actual != digest:
        raise InputError(f"{path}: sha256 {actual} is not the pinned {digest}; run tools/fetch-artifacts")
    return torch.load(path, map_location="cpu", weights_only=True)


def build(network, state, classes=None):
    """The ImageNet network with its pinned weights (every key used, strict); with `classes`, a
    fresh seeded classifier of that many outputs replaces the ImageNet one."""
    import torch
    if network == "mobilenet_v2":
        import torchvision
        model = torchvision.models.mobilenet_v2(weights=None)
        model.load_state_dict(state, strict=True)
        if classes:
            model.classifier[1] = torch.nn.Linear(model.classifier[1].in_features, classes)
    else:
        import efficientnet_lite
        model = efficientnet_lite.EfficientNetLite0()
        model.load_state_dict(state, strict=True)
        if classes:
            model._fc = torch.nn.Linear(model._fc.in_features, classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    return model


def forward_macs(model, size):
    """Multiply-accumulates of one forward pass of one image (convolutions and linear layers)."""
    import torch
    total = [0]

    def conv_hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        total[0] += output.numel() // output.shape[0] * (module.in_channels // module.groups) * k

    def linear_hook(module, inputs, output):
        total[0] += module.in_features * module.out_features

    hooks = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    return total[0]


def stored_bytes(model):
    """Bytes of the fine-tuned network as a task's stored artefact (`torch.save` of its state dict)."""
    import torch
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


# ---------------------------------------------------------------------------------------------
# Fine-tuning.

def train(model, x, y, steps, lr, batch, seed, progress=None):
    """SGD (momentum 0.9) with a cosine schedule over `steps` batches of a seeded reshuffle.
    Returns the mean loss of the first and of the last 10% of the steps."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    order, position, losses = torch.randperm(len(x), generator=generator), 0, []
    model.train()
    for step in range(steps):
        if position + batch > len(order):
            order, position = torch.randperm(len(x), generator=generator), 0
        index = order[position:position + min(batch, len(x))]
        position += len(index)
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model(xt[index]), yt[index])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step} (lr {lr})")
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1, steps, loss.item())
    tail = max(1, steps // 10)
    return float(np.mean(losses[:tail])), float(np.mean(losses[-tail:]))


def accuracy(model, x, y, batch=250):
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            logits = model(torch.from_numpy(x[start:start + batch]))
            correct += int((logits.argmax(1).numpy() == y[start:start + batch]).sum())
    return correct / len(x)


class Clock:
    """Wall and CPU (this process, all threads) seconds of named phases, summed."""

    def __init__(self):
        self.seconds, self.cpu = {}, {}

    def __call__(self, name, function, *args, **kwargs):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu_started
        return result


def say(args, message):
    if not args.json:
        print(message, file=sys.stderr, flush=True)


def step_reporter(args, label):
    """Progress on stderr: a redrawn line on a terminal, a plain line every 10 s otherwise."""
    if args.json:
        return None
    last = [0.0]
    terminal = sys.stderr.isatty()

    def report(step, steps, loss):
        now = time.monotonic()
        if terminal:
            print(f"\r{label}: step {step}/{steps} loss {loss:.3f}", end="\n" if step == steps else "",
                  file=sys.stderr, flush=True)
        elif now - last[0] >= 10 or step == steps:
            last[0] = now
            print(f"{label}: step {step}/{steps} loss {loss:.3f}", file=sys.stderr, flush=True)
    return report


def finetune(args, network, data, state):
    """Learning-rate selection on 800/200, retraining on all training rows, one test."""
    import torch
    x_train, y_train, x_test, y_test = data
    split = len(x_train) * 4 // 5
    clock, trials = Clock(), []
    probe = build(network, state, classes=10)
    macs = forward_macs(probe, x_train.shape[-1])
    del probe
    for lr in args.lrs:
        torch.manual_seed(args.seed)
        model = build(network, state, classes=10)
        first, last = clock("trials", train, model, x_train[:split], y_train[:split], args.steps, lr, args.batch,
                            args.seed, step_reporter(args, f"{network} lr {lr} (800/200)"))
        val = clock("trials", accuracy, model, x_train[split:], y_train[split:])
        trials.append({"lr": lr, "val_accuracy": val, "first_loss": first, "last_loss": last})
        say(args, f"{network}: lr {lr}: validation accuracy {val:.4f} (loss {first:.3f} -> {last:.3f})")
    best = max(trials, key=lambda t: (t["val_accuracy"], -t["lr"]))
    torch.manual_seed(args.seed)
    model = build(network, state, classes=10)
    first, last = clock("final", train, model, x_train, y_train, args.steps, best["lr"], args.batch, args.seed,
                        step_reporter(args, f"{network} lr {best['lr']} (all {len(x_train)})"))
    test = clock("test", accuracy, model, x_test, y_test)
    say(args, f"{network}: lr {best['lr']} on {len(x_train)}: test accuracy {test:.4f}")
    images_trained = (len(args.lrs) + 1) * args.steps * min(args.batch, len(x_train))
    images_evaluated = len(args.lrs) * (len(x_train) - split)
    training_macs = 3 * macs * images_trained + macs * images_evaluated
    return {
        "network": network,
        "trials": trials,
        "chosen_lr": best["lr"],
        "final_first_loss": first,
        "final_last_loss": last,
        "test_accuracy": test,
        "test_count": len(x_test),
        "seconds": {"trials": clock.seconds["trials"], "final": clock.seconds["final"], "test": clock.seconds["test"],
                    "train_total": clock.seconds["trials"] + clock.seconds["final"]},
        "cpu_seconds": {"trials": clock.cpu["trials"], "final": clock.cpu["final"], "test": clock.cpu["test"]},
        "forward_macs_per_image": macs,
        "macs": {"train_total": training_macs, "test": macs * len(x_test),
                 "images_trained": images_trained, "images_evaluated": images_evaluated},
        "bytes_per_task": stored_bytes(model),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


# ---------------------------------------------------------------------------------------------
# Head2Toe's cost, measured with the same clock.

def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_h2t(binary, store, arguments, env, phase, clock):
    """Runs one h2t-store command; returns its JSON output; adds its wall and CPU seconds to `phase`."""
    started, cpu_started = time.perf_counter(), children_cpu()
    result = subprocess.run([binary, *arguments, "--store", store, "--json"], capture_output=True, text=True, env=env)
    entry = clock.setdefault(phase, {"wall": 0.0, "cpu": 0.0})
    entry["wall"] += time.perf_counter() - started
    entry["cpu"] += children_cpu() - cpu_started
    if result.returncode != 0:
        raise RuntimeError(f"h2t-store {' '.join(arguments)} failed: {result.stderr.strip()}")
    return json.loads(result.stdout) if result.stdout.strip() else None


def head2toe_cost(args, cache, macs_per_image, store):
    """The main job's Head2Toe side and a second task, timed; returns the figures."""
    binary = os.path.abspath(args.compare_h2t)
    if not os.access(binary, os.X_OK):
        raise InputError(f"{binary}: not an executable h2t-store; run swift build -c release")
    work = os.path.dirname(store)
    env = dict(os.environ, H2T_CACHE=cache)
    sizes = ["--target-size", "512", "--target-size", "1024"]
    common = ["--backbone", "mobilenet_v2", "--dataset", "fashion-mnist"]
    clock = {}
    say(args, f"head2toe: ingest (train {args.train_limit} + test {args.test_limit})")
    run_h2t(binary, store, ["ingest", *common, "--fashion-mnist", "train", "--limit", str(args.train_limit),
                            "--split", "train", *sizes], env, "ingest", clock)
    run_h2t(binary, store, ["ingest", *common, "--fashion-mnist", "test", "--limit", str(args.test_limit),
                            "--split", "test", *sizes], env, "ingest", clock)
    say(args, "head2toe: fit (the whole sweep, final fits, test)")
    fit = run_h2t(binary, store, ["fit", "--dataset", "fashion-mnist", "--train-limit", str(args.train_limit),
                                  "--task", "fashion-mnist"], env, "fit", clock)
    head_file = os.path.join(work, "head.safetensors")
    run_h2t(binary, store, ["head", "export", "fashion-mnist@v1", "--out", head_file], env, "export", clock)
    # The second task: the same images relabelled; ingest finds every example already stored.
    say(args, "head2toe: second task (4 coarse classes on the same images)")
    for split in ("train", "test"):
        images, labels = FASHION[split]
        y = read_idx(artefact(cache, labels, "Fashion-MNIST labels"))
        relabelled = os.path.join(work, f"coarse-{split}-labels.gz")
        with gzip.open(relabelled, "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + len(y).to_bytes(4, "big") + bytes(COARSE[v] for v in y))
        limit = args.train_limit if split == "train" else args.test_limit
        run_h2t(binary, store, ["ingest", "--backbone", "mobilenet_v2", "--idx", os.path.join(cache, images), "--labels", relabelled,
                                "--limit", str(limit), "--dataset", "fashion-coarse", "--split", split,
                                "--class-names", COARSE_NAMES, *sizes], env, "second_task_ingest", clock)
    coarse_fit = run_h2t(binary, store, ["fit", "--dataset", "fashion-coarse", "--train-limit", str(args.train_limit),
                                         "--task", "fashion-coarse"], env, "second_task_fit", clock)
    methods = {m["method"]: m for m in fit["methods"]}
    images = args.train_limit + args.test_limit
    return {
        "seconds": clock,
        "macs": {"ingest": macs_per_image * images, "fit": None},
        "methods": {name: {"features": m["features"], "fraction": m.get("fraction"), "cv_accuracy": m["cv_accuracy"],
                           "test_accuracy": m["test_accuracy"]} for name, m in methods.items()},
        "fit_seconds_reported": fit["seconds"],
        "second_task_accuracy": {m["method"]: m["test_accuracy"] for m in coarse_fit["methods"]},
        "head_bytes": os.path.getsize(head_file),
        "store_bytes": sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(store) for f in files),
    }


# ---------------------------------------------------------------------------------------------

def machine():
    cpu = "unknown"
    flags = 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "unknown":
                    cpu = line.split(":", 1)[1].strip()
                flags += "avx512" in line  # as `grep -c avx512 /proc/cpuinfo`
    except OSError:
        pass
    import torch
    return {"cpu": cpu, "avx512_lines": flags, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(), "torch": torch.__version__}


def write(args, results):
    """Writes the results so far to --out (a long run keeps what it measured if stopped)."""
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(results, indent=1, sort_keys=True) + "\n")


def command_run(args):
    import torch
    cache = cache_dir(args.cache)
    states = {network: load_state(cache, network) for network in args.networks}
    x_train_u8, y_train = fashion(cache, "train", args.train_limit)
    x_test_u8, y_test = fashion(cache, "test", args.test_limit)
    if len(x_train_u8) < 10 or len(np.unique(y_train)) < 2:
        raise InputError("--train-limit: need at least 10 training images of two classes")
    torch.manual_seed(args.seed)
    started = {"load_average": list(os.getloadavg())}
    results = {"protocol": {"train": len(y_train), "test": len(y_test), "selection_split": [len(y_train) * 4 // 5, len(y_train) - len(y_train) * 4 // 5],
                            "input_size": INPUT_SIZE, "steps": args.steps, "batch": args.batch, "lrs": args.lrs,
                            "optimiser": "SGD momentum 0.9, cosine to 0, no weight decay, no augmentation",
                            "seed": args.seed},
               "machine": machine(), "finetune": []}
    if args.compare_h2t:
        macs = forward_macs(build("mobilenet_v2", load_state(cache, "mobilenet_v2")), INPUT_SIZE)
        work = tempfile.mkdtemp(prefix="h2t-finetune-", dir=args.work)
        store = os.path.join(args.keep_store or work, "h2t.store")
        try:
            results["head2toe"] = head2toe_cost(args, cache, macs, store)
            results["head2toe"]["load_average_after"] = list(os.getloadavg())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        write(args, results)
    for network in args.networks:
        data = (preprocess(x_train_u8, network), y_train, preprocess(x_test_u8, network), y_test)
        results["finetune"].append(finetune(args, network, data, states[network]))
        results["finetune"][-1]["load_average_after"] = list(os.getloadavg())
        write(args, results)
    results["machine"]["load_average_start"] = started["load_average"]
    results["machine"]["load_average_end"] = list(os.getloadavg())
    return results


def command_quick(args):
    """A few steps on a few images of both networks; fails if the weights do not map (an ImageNet
    photo misclassified), the training loss does not fall, or a figure is missing."""
    import torch
    cache = cache_dir(args.cache)
    from PIL import Image
    photo = np.asarray(Image.open(artefact(cache, "images/chelsea.png", "sample photo")).convert("RGB"))
    # 10 images: 8 train the trial, every step on all 8, so its loss must fall; 2 validate.
    args.lrs, args.steps, args.batch = [0.01], 4, 8
    x_train_u8, y_train = fashion(cache, "train", 10)
    x_test_u8, y_test = fashion(cache, "test", 16)
    results = {"finetune": []}
    for network in ("mobilenet_v2", "efficientnet_lite0"):
        state = load_state(cache, network)
        model = build(network, state).eval()
        _, _, mean, std = NETWORKS[network]
        image = torch.from_numpy(((photo.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1).copy())
        with torch.no_grad():
            top = int(model(image[None]).argmax())
        if not 281 <= top <= 285:  # ImageNet's domestic cats
            raise AssertionError(f"{network}: chelsea.png classified as ImageNet class {top}, not a cat: the weights do not map")
        data = (preprocess(x_train_u8, network), y_train, preprocess(x_test_u8, network), y_test)
        result = finetune(args, network, data, state)
        trial = result["trials"][0]
        if not trial["last_loss"] < trial["first_loss"]:
            raise AssertionError(f"{network}: training loss did not fall ({trial['first_loss']:.3f} -> {trial['last_loss']:.3f})")
        if not (0 <= result["test_accuracy"] <= 1 and result["bytes_per_task"] > 1_000_000 and result["macs"]["train_total"] > 0):
            raise AssertionError(f"{network}: implausible result {result}")
        result["imagenet_top1_chelsea"] = top
        results["finetune"].append(result)
    return results


def command_verify(args):
    """Torch forward (the fine-tuning networks) against ONNX Runtime (tools/onnx_reference.py)."""
    import torch
    try:
        import onnx_reference as ref
    except ImportError as error:
        raise InputError(f"verify needs onnx and onnxruntime ({error}); pip install onnx==1.23.2 onnxruntime==1.32.0")
    cache = cache_dir(args.cache)
    images = [("chelsea.png", ref.resize_bilinear(ref.decode_png(artefact(cache, "images/chelsea.png", "sample photo")), 64, 64)),
              ("coffee.png", ref.resize_bilinear(ref.decode_png(artefact(cache, "images/coffee.png", "sample photo")), 64, 64))]
    x, _ = fashion(cache, "test", 6)
    for i, gray in enumerate(x):
        images.append((f"fashion-test-{i}", ref.resize_bilinear(np.repeat(gray[:, :, None], 3, axis=2), 64, 64)))
    pixels = np.stack([image for _, image in images])
    report = {"images": [name for name, _ in images], "tolerance": args.tolerance, "networks": {}}
    for network in NETWORKS:
        state = load_state(cache, network)
        inputs = ref.normalise(pixels, network)
        model_onnx, _ = ref.build_model(network, ref.read_legacy_checkpoint(os.path.join(cache, NETWORKS[network][0])), 64, 64)
        expected = ref.session(model_onnx, os.cpu_count()).run(["logits"], {"input": inputs})[0]
        with torch.no_grad():
            actual = build(network, state).eval()(torch.from_numpy(inputs)).numpy()
        error = float(np.abs(actual - expected).max() / np.abs(expected).max())
        same_top = bool((actual.argmax(1) == expected.argmax(1)).all())
        report["networks"][network] = {"max_abs_diff_over_max_abs": error, "same_top1": same_top}
        if error > args.tolerance or not same_top:
            raise AssertionError(f"{network}: torch logits differ from ONNX Runtime: max|d|/max|ref| = {error:.2e}")
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "quick", "verify"])
    parser.add_argument("--cache", help="artefact cache (default $H2T_CACHE or ~/.cache/h2t-store)")
    parser.add_argument("--networks", default="mobilenet_v2,efficientnet_lite0")
    parser.add_argument("--lrs", default="0.003,0.01,0.03", help="learning rates tried on the 800/200 split")
    parser.add_argument("--steps", type=int, default=160, help="SGD steps of every trial and of the final run")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-limit", type=int, default=1000)
    parser.add_argument("--test-limit", type=int, default=10000)
    parser.add_argument("--compare-h2t", metavar="BIN", help="also time h2t-store's ingest + fit (and a second task)")
    parser.add_argument("--work", help="folder for the temporary store (default: the system's)")
    parser.add_argument("--keep-store", metavar="DIR", help="with --compare-h2t: build the store in DIR and keep it")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="verify: max |torch - onnx| / max |onnx| of the logits")
    parser.add_argument("--out", help="write the JSON results here")
    parser.add_argument("--json", action="store_true", help="print the JSON results on stdout, no progress")
    args = parser.parse_args()
    try:
        args.networks = [n.strip() for n in args.networks.split(",") if n.strip()]  # none: Head2Toe's side only
        try:
            args.lrs = [float(v) for v in args.lrs.split(",")]
        except ValueError:
            raise InputError(f"--lrs: '{args.lrs}' is not a comma-separated list of numbers")
        if not args.lrs or any(not (v > 0 and math.isfinite(v)) for v in args.lrs):
            raise InputError("--lrs: learning rates must be positive")
        if args.steps < 1 or args.batch < 1 or args.train_limit < 1 or args.test_limit < 1:
            raise InputError("--steps, --batch, --train-limit and --test-limit must be positive")
        # Every artefact is checked before torch loads (seconds on a busy machine).
        cache = cache_dir(args.cache)
        networks = args.networks if args.command == "run" else list(NETWORKS)
        for network in networks:
            if network not in NETWORKS:
                raise InputError(f"--networks: unknown network '{network}' (mobilenet_v2, efficientnet_lite0)")
            artefact(cache, NETWORKS[network][0], f"{network} weights")
        for split in ("train", "test"):
            for relative in FASHION[split]:
                artefact(cache, relative, f"Fashion-MNIST {split} file")
        if args.command != "run":
            artefact(cache, "images/chelsea.png", "sample photo")
        results = {"run": command_run, "quick": command_quick, "verify": command_verify}[args.command](args)
    except InputError as error:
        print(f"finetune_baseline: {error}", file=sys.stderr)
        return 1
    text = json.dumps(results, indent=1, sort_keys=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.json or not args.out:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
