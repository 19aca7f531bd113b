"""PyTorch eager at the shapes `zoo speed` timed, on the same cores; prints both and the ratio.

Usage: compare.py ZOO_JSON...   (each file the output of `zoo speed --json`)
Run by compare.sh, which produces the JSON. Needs torch and torchvision (scripts/reference/setup.sh
installs them into .venv-ref); zoo itself never depends on Python.
"""

import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision


def alexnet_cifar() -> nn.Module:
    """zoo/alexnet-cifar.yaml as PyTorch: 5 conv (+ReLU), LRN after conv1/conv2, 3/2 max-pool, 3 FC."""

    def lrn():
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

    return nn.Sequential(
        nn.Conv2d(3, 64, 5, padding=2), nn.ReLU(inplace=True), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 3 * 3, 1024), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU(inplace=True),
        nn.Linear(1024, 10),
    )


MODELS = {
    # card name -> (constructor, input size, classes)
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), 224, 1000),
    "alexnet-cifar": (alexnet_cifar, 32, 10),
}


def rate(model, batch, size, classes, mode, runs):
    """Median images/s over `runs` timed passes after one warm-up, as `zoo speed` does."""
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % classes
    if mode == "inference":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

    step()
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        step()
        rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def main(paths):
    rows = [row for p in paths for row in json.load(open(p))]
    torch.manual_seed(0)
    print(f"PyTorch {torch.__version__} eager, fp32, {torch.get_num_threads()} threads; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs\n")
    print("| card | mode | batch | zoo images/s | PyTorch images/s | zoo / PyTorch |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    models = {}
    for row in rows:
        card = row["card"]
        if card not in MODELS:
            print(f"| {card} | {row['mode']} | {row['batch']} | {row['median']:.1f} | "
                  "no PyTorch twin | |")
            continue
        make, size, classes = MODELS[card]
        model = models.setdefault(card, make())
        runs = 5
        torch_rate = rate(model, row["batch"], size, classes, row["mode"], runs)
        print(f"| {card} | {row['mode']} | {row['batch']} | {row['median']:.1f} | "
              f"{torch_rate:.1f} | {row['median'] / torch_rate:.2f} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
