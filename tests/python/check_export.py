#!/usr/bin/env python3
"""Checks a `master export` directory with PyTorch alone.

Loads DIR/model.pt with torch.jit.load, rebuilds the exact test set the trial was scored on from
the model card (DIR/model.json, section "data"), feeds it as a PyTorch user would (float32
images [N, C, H, W] with intensities in [0, 1]) and compares the accuracy with the card's
reported test accuracy.

The test split is the worker's (worker/src/data.rs): the first `test_subset` examples of the
test file in file order (all when 0). Datasets: "fashion-mnist" (--fashion-mnist-dir, else
$EXPLORE_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist), "mnist" and "digits" (under
--data-dir, else $EXPLORE_DATA_DIR, $EXPLORE_CACHE/data or ~/.cache/explore/data), "idx" (the
card's paths). Digits: the last 360 rows of digits.csv.gz, pixels round(v * 255 / 16).
Image folders, derived domains and several domains are not rebuilt here (exit status 2).

Exit status: 0 when |accuracy - reported| <= --tolerance, 1 when not, 2 on bad input.
Prints one JSON object: accuracy, reported, difference, examples.
"""

import argparse
import gzip
import json
import os
import struct
import sys
from pathlib import Path

import torch

DIGITS_TEST_ROWS = 360
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def fail(message):
    print(f"check_export: {message}", file=sys.stderr)
    sys.exit(2)


def read_maybe_gzipped(path):
    data = Path(path).read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_idx(path):
    """(dims, bytes) of an unsigned-byte IDX file."""
    data = read_maybe_gzipped(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        fail(f"{path} is not an unsigned-byte IDX file")
    ndims = data[3]
    dims = struct.unpack(f">{ndims}I", data[4 : 4 + 4 * ndims])
    return dims, data[4 + 4 * ndims :]


def idx_test_set(images_path, labels_path, limit):
    dims, pixels = read_idx(images_path)
    if len(dims) == 3:
        count, channels, height, width = dims[0], 1, dims[1], dims[2]
    elif len(dims) == 4:
        count, channels, height, width = dims
    else:
        fail(f"{images_path}: an image file needs 3 or 4 dimensions, found {len(dims)}")
    label_dims, labels = read_idx(labels_path)
    if len(label_dims) != 1 or label_dims[0] != count:
        fail(f"{labels_path} does not hold one label per image of {images_path}")
    n = count if limit == 0 else min(limit, count)
    size = channels * height * width
    x = torch.frombuffer(bytearray(pixels[: n * size]), dtype=torch.uint8)
    x = x.reshape(n, channels, height, width)
    y = torch.frombuffer(bytearray(labels[:n]), dtype=torch.uint8).long()
    return x, y


def digits_test_set(path, limit):
    rows = [
        line.split(",")
        for line in read_maybe_gzipped(path).decode().splitlines()
        if line.strip()
    ]
    rows = rows[-DIGITS_TEST_ROWS:]
    n = len(rows) if limit == 0 else min(limit, len(rows))
    pixels = [round(float(v) * 255.0 / 16.0) for row in rows[:n] for v in row[:64]]
    x = torch.tensor(pixels, dtype=torch.uint8).reshape(n, 1, 8, 8)
    y = torch.tensor([int(float(row[64])) for row in rows[:n]], dtype=torch.long)
    return x, y


def default_data_dir():
    if os.environ.get("EXPLORE_DATA_DIR"):
        return Path(os.environ["EXPLORE_DATA_DIR"])
    if os.environ.get("EXPLORE_CACHE"):
        return Path(os.environ["EXPLORE_CACHE"]) / "data"
    return Path.home() / ".cache/explore/data"


def named_files(directory):
    files = []
    for name in TEST_FILES:
        gz, raw = directory / f"{name}.gz", directory / name
        files.append(raw if not gz.exists() and raw.exists() else gz)
    return files


def test_set(data, args):
    """The uint8 test images [N, C, H, W] and labels the trial was scored on."""
    unsupported = []
    if data.get("domains"):
        unsupported.append("several domains")
    if data.get("transform"):
        unsupported.append("a derived domain (transform)")
    if data.get("size"):
        unsupported.append("resized images (size)")
    dataset = data.get("dataset", "")
    if dataset == "folder":
        unsupported.append("image folders")
    if unsupported:
        fail(f"this script does not rebuild {', '.join(unsupported)}; use `worker evaluate`")
    limit = int(data.get("test_subset") or 0)
    if dataset in ("fashion-mnist", "fashion_mnist"):
        directory = Path(
            args.fashion_mnist_dir
            or os.environ.get("EXPLORE_FASHION_MNIST_DIR")
            or FASHION_MNIST_DIR
        )
        return idx_test_set(*named_files(directory), limit)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if dataset == "mnist":
        return idx_test_set(*named_files(data_dir / "mnist"), limit)
    if dataset == "digits":
        return digits_test_set(data_dir / "digits/digits.csv.gz", limit)
    if dataset == "idx":
        return idx_test_set(data["test_images"], data["test_labels"], limit)
    fail(f"unknown dataset {dataset!r} in the model card")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="a directory written by `master export`")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--fashion-mnist-dir", help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--data-dir", help="directory holding mnist/ and digits/")
    args = parser.parse_args()
    directory = Path(args.dir)
    try:
        card = json.loads((directory / "model.json").read_text())
    except (OSError, ValueError) as e:
        fail(f"cannot read the model card: {e}")
    reported = card.get("test_accuracy")
    if reported is None:
        reported = card.get("metrics", {}).get("test_accuracy")
    if reported is None:
        fail("the model card reports no test accuracy")

    x, y = test_set(card.get("data", {}), args)
    model = torch.jit.load(str(directory / "model.pt"), map_location="cpu")
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), 500):
            batch = x[start : start + 500].float() / 255.0
            logits = model(batch)
            correct += (logits.argmax(dim=1) == y[start : start + 500]).sum().item()
    accuracy = correct / len(y)
    difference = abs(accuracy - reported)
    print(
        json.dumps(
            {
                "accuracy": accuracy,
                "reported": reported,
                "difference": difference,
                "examples": len(y),
            }
        )
    )
    if difference > args.tolerance:
        print(
            f"check_export: accuracy {accuracy:.4f} differs from the reported {reported:.4f} "
            f"by more than {args.tolerance}",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
