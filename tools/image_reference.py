#!/usr/bin/env python3
"""Writes the image and IDX test fixtures and their expected values for H2TBackboneTests.

  tools/image_reference.py Tests/H2TBackboneTests/Fixtures

Needs Pillow (pip install pillow) to *write* the PNG/JPEG fixtures and to decode them into the
expected pixels (Pillow is what torchvision's ImageFolder decodes with). The preprocessing
reference is computed here in plain Python (float64) from the rule documented in
Sources/H2TBackbone/Images/Preprocessing.swift (PIL's bilinear filter with half-pixel centres and
support widened when shrinking), and cross-checked against Pillow's own 8-bit resize (they must
agree within 1.5 grey levels, Pillow rounding to 8 bits after each pass).
"""

import gzip
import json
import os
import struct
import sys

from PIL import Image

MOBILENET_MEAN = [0.485, 0.456, 0.406]
MOBILENET_STD = [0.229, 0.224, 0.225]


def pattern(width, height, channels, seed):
    """Deterministic, smooth-ish pixel values with some edges (so resizing has work to do)."""
    data = []
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                v = (x * 37 + y * 23 + c * 71 + seed * 13 + (x * y * 5) % 17) % 256
                data.append(v)
    return bytes(data)


def save(img, path, **kwargs):
    img.save(path, **kwargs)


def decoded(path):
    img = Image.open(path)
    img.load()
    mode = img.mode
    if mode in ("L", "LA", "I;16", "I"):
        out = img.convert("L")
        channels = 1
    else:
        out = img.convert("RGB")
        channels = 3
    return {"width": out.width, "height": out.height, "channels": channels, "mode": mode,
            "pixels": list(out.tobytes())}


def axis_taps(n_in, n_out):
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    taps = []
    for i in range(n_out):
        center = (i + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), n_in)
        ws = []
        for s in range(first, max(first, last)):
            x = abs((s - center + 0.5) / filterscale)
            ws.append(1 - x if x < 1 else 0.0)
        total = sum(ws)
        taps.append((first, [w / total if total else 0.0 for w in ws]))
    return taps


def resize_float(pixels, width, height, channels, out_w, out_h):
    """Rows then columns, float64, no intermediate rounding. Returns [out_h][out_w][channels]."""
    hx = axis_taps(width, out_w)
    vy = axis_taps(height, out_h)
    rows = [[[0.0] * channels for _ in range(out_w)] for _ in range(height)]
    for y in range(height):
        for x, (first, ws) in enumerate(hx):
            for c in range(channels):
                rows[y][x][c] = sum(w * pixels[(y * width + first + t) * channels + c] for t, w in enumerate(ws))
    out = [[[0.0] * channels for _ in range(out_w)] for _ in range(out_h)]
    for y, (first, ws) in enumerate(vy):
        for x in range(out_w):
            for c in range(channels):
                out[y][x][c] = sum(w * rows[first + t][x][c] for t, w in enumerate(ws))
    return out


def preprocess(image, out_w, out_h, mean, std):
    """Channel-first [3, out_h, out_w] list, gray replicated, (v/255 - mean) / std."""
    res = resize_float(image["pixels"], image["width"], image["height"], image["channels"], out_w, out_h)
    tensor = []
    for k in range(3):
        c = k if image["channels"] == 3 else 0
        for y in range(out_h):
            for x in range(out_w):
                tensor.append(round((res[y][x][c] / 255.0 - mean[k]) / std[k], 6))
    return tensor, res


def pil_check(path, out_w, out_h, res):
    img = Image.open(path)
    img = img.convert("L" if img.mode in ("L", "LA") else "RGB")
    pil = img.resize((out_w, out_h), Image.BILINEAR)
    channels = 1 if pil.mode == "L" else 3
    data = pil.tobytes()
    worst = 0.0
    for y in range(out_h):
        for x in range(out_w):
            for c in range(channels):
                worst = max(worst, abs(data[(y * out_w + x) * channels + c] - res[y][x][c]))
    assert worst <= 1.5, f"PIL disagrees with the documented rule on {path}: {worst}"
    return worst


def write_idx(path, shape, values, compress, dtype=0x08):
    header = bytes([0, 0, dtype, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape)
    raw = header + bytes(values)
    if compress:
        raw = gzip.compress(raw, mtime=0)
    with open(path, "wb") as f:
        f.write(raw)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "Tests/H2TBackboneTests/Fixtures"
    images = os.path.join(out, "images")
    idx = os.path.join(out, "idx")
    os.makedirs(images, exist_ok=True)
    os.makedirs(idx, exist_ok=True)

    # --- PNG / JPEG -------------------------------------------------------------------------
    gray = Image.frombytes("L", (9, 7), pattern(9, 7, 1, 1))
    rgb = Image.frombytes("RGB", (11, 8), pattern(11, 8, 3, 2))
    rgba = Image.frombytes("RGBA", (6, 5), pattern(6, 5, 4, 3))
    la = Image.frombytes("LA", (5, 4), pattern(5, 4, 2, 4))
    big = Image.frombytes("RGB", (32, 24), pattern(32, 24, 3, 5))
    save(gray, os.path.join(images, "gray.png"))
    save(rgb, os.path.join(images, "rgb.png"))
    save(rgba, os.path.join(images, "rgba.png"))
    save(la, os.path.join(images, "gray_alpha.png"))
    save(rgb.quantize(colors=6), os.path.join(images, "palette.png"))
    save(big, os.path.join(images, "rgb.jpg"), quality=90, subsampling=2)  # 4:2:0
    save(big, os.path.join(images, "rgb_progressive.jpg"), quality=85, progressive=True)
    save(big.convert("L"), os.path.join(images, "gray.jpg"), quality=90)
    save(big.convert("CMYK"), os.path.join(images, "cmyk.jpg"), quality=90)
    with open(os.path.join(images, "rgb.jpg"), "rb") as f:
        jpeg = f.read()
    with open(os.path.join(images, "truncated.jpg"), "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    # Flip bits in the middle of the entropy-coded data: libjpeg only warns; we must refuse.
    sos = jpeg.index(b"\xff\xda")
    corrupt = bytearray(jpeg)
    for i in range(sos + 40, len(jpeg) - 40, 7):
        corrupt[i] ^= 0x5A
    corrupt = bytes(corrupt).replace(b"\xff\xd9", b"\xff\x00")[:-2] + b"\xff\xd9"
    with open(os.path.join(images, "corrupt_data.jpg"), "wb") as f:
        f.write(corrupt)
    with open(os.path.join(images, "rgb.png"), "rb") as f:
        png = bytearray(f.read())
    idat = png.index(b"IDAT")
    png[idat + 10] ^= 0xFF  # breaks the chunk CRC / zlib stream
    with open(os.path.join(images, "corrupt.png"), "wb") as f:
        f.write(bytes(png))
    with open(os.path.join(images, "not_an_image.png"), "wb") as f:
        f.write(b"this is a text file with an image extension\n")

    expected = {}
    for name in ["gray.png", "rgb.png", "rgba.png", "gray_alpha.png", "palette.png",
                 "rgb.jpg", "rgb_progressive.jpg", "gray.jpg"]:
        expected[name] = decoded(os.path.join(images, name))

    # --- preprocessing references ------------------------------------------------------------
    cases = [("gray.png", 16, 20), ("rgb.png", 5, 3), ("rgb.png", 11, 8), ("rgb.jpg", 20, 13), ("gray.jpg", 40, 30)]
    prep = []
    for name, w, h in cases:
        tensor, res = preprocess(expected[name], w, h, MOBILENET_MEAN, MOBILENET_STD)
        worst = pil_check(os.path.join(images, name), w, h, res)
        prep.append({"image": name, "width": w, "height": h, "mean": MOBILENET_MEAN, "std": MOBILENET_STD,
                     "tensor": tensor, "max_abs_difference_to_pil_uint8": worst})

    with open(os.path.join(out, "images_expected.json"), "w") as f:
        json.dump({"decoded": expected, "preprocessing": prep}, f, separators=(",", ":"))
        f.write("\n")

    # --- IDX ---------------------------------------------------------------------------------
    pixels = list(pattern(5, 4, 1, 9)) * 3
    pixels = [(v + i) % 256 for i, v in enumerate(pixels)]
    write_idx(os.path.join(idx, "images.idx3-ubyte"), [3, 4, 5], pixels, compress=False)
    write_idx(os.path.join(idx, "images.idx3-ubyte.gz"), [3, 4, 5], pixels, compress=True)
    write_idx(os.path.join(idx, "labels.idx1-ubyte.gz"), [3], [7, 0, 9], compress=True)
    write_idx(os.path.join(idx, "labels_two.idx1-ubyte.gz"), [2], [1, 2], compress=True)
    write_idx(os.path.join(idx, "float.idx3"), [1, 1, 1], [0, 0, 0, 0], compress=False, dtype=0x0D)
    with open(os.path.join(idx, "images.idx3-ubyte.gz"), "rb") as f:
        gz = f.read()
    with open(os.path.join(idx, "truncated.idx3-ubyte.gz"), "wb") as f:
        f.write(gz[: len(gz) - 12])
    raw = bytes([0, 0, 8, 3]) + b"".join(struct.pack(">I", s) for s in [3, 4, 5]) + bytes(pixels[:-5])
    with open(os.path.join(idx, "short.idx3-ubyte"), "wb") as f:
        f.write(raw)
    with open(os.path.join(idx, "idx_expected.json"), "w") as f:
        json.dump({"shape": [3, 4, 5], "pixels": pixels, "labels": [7, 0, 9]}, f, separators=(",", ":"))
        f.write("\n")
    for case in prep:
        print(f"{case['image']} -> {case['width']}x{case['height']}: max |float - PIL uint8| = "
              f"{case['max_abs_difference_to_pil_uint8']:.3f}")


if __name__ == "__main__":
    main()
