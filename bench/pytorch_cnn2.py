"""PyTorch reference for bench/trainer_vs_pytorch.sh (CPU) and bench/gpu.sh (`--device cuda`,
optionally `--autocast bf16`): trains the `cnn2` preset with the same hyperparameters, data
sizes, normalisation and schedule as `worker train`, and prints one JSON line
{val_accuracy, test_accuracy, train_seconds, train_examples, epochs, device, autocast}. On a GPU
the splits live on the device, as the worker keeps them."""
import argparse
import gzip
import json
import time

import numpy as np
import torch
from torch import nn


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def cnn2():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, 10),
    )


def accuracy(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 250):
            correct += (model(x[i:i + 250]).argmax(1) == y[i:i + 250]).sum().item()
    return correct / len(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--autocast", default="off", choices=["off", "bf16"],
                   help="bf16 autocast of the forward pass (cuda only)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    if a.autocast != "off" and dev.type != "cuda":
        raise SystemExit("--autocast needs --device cuda")
    d = a.data_dir
    xs = read_idx(f"{d}/train-images-idx3-ubyte.gz")
    ys = read_idx(f"{d}/train-labels-idx1-ubyte.gz")
    xt = read_idx(f"{d}/t10k-images-idx3-ubyte.gz")
    yt = read_idx(f"{d}/t10k-labels-idx1-ubyte.gz")
    perm = np.random.default_rng(42).permutation(len(xs))
    n_val = round(len(xs) * 0.1)
    train_idx, val_idx = perm[: len(xs) - n_val], perm[len(xs) - n_val:]
    to_t = lambda x: torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    x_train, x_val, x_test = to_t(xs[train_idx]), to_t(xs[val_idx]), to_t(xt)
    mean, std = x_train.mean(), x_train.std()
    x_train, x_val, x_test = [(x - mean) / std for x in (x_train, x_val, x_test)]
    y_train = torch.from_numpy(ys[train_idx].astype(np.int64))
    y_val = torch.from_numpy(ys[val_idx].astype(np.int64))
    y_test = torch.from_numpy(yt.astype(np.int64))
    x_train, x_val, x_test, y_train, y_val, y_test = [
        t.to(dev) for t in (x_train, x_val, x_test, y_train, y_val, y_test)]

    model = cnn2().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    steps_per_epoch = len(x_train) // a.batch_size
    total = steps_per_epoch * a.epochs
    warm = max(1, total // 10)

    def lr_at(step):  # warm-up from lr/10 to lr over 10% of steps, then linear decay to 0
        if step < warm:
            return a.lr * (0.1 + 0.9 * step / warm)
        return a.lr * max(0.0, (total - step) / max(1, total - warm))

    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    step = 0
    for _ in range(a.epochs):
        model.train()
        order = torch.randperm(len(x_train), device=dev)
        for i in range(steps_per_epoch):
            idx = order[i * a.batch_size:(i + 1) * a.batch_size]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.autocast == "bf16"):
                loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            step += 1
        accuracy(model, x_val, y_val)  # the per-epoch validation pass worker train also makes
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "val_accuracy": accuracy(model, x_val, y_val),
        "test_accuracy": accuracy(model, x_test, y_test),
        "train_seconds": seconds,
        "train_examples": len(x_train),
        "epochs": a.epochs,
        "device": str(dev),
        "autocast": a.autocast,
    }))


if __name__ == "__main__":
    main()
