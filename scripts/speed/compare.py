"""PyTorch eager at the shapes `zoo speed` timed, on the same cores; prints both and the ratio.

Usage: compare.py [--precision f32|bf16] [--record TSV] ZOO_JSON...   (each file the output
       of `zoo speed --json`; --record appends each row's rates to TSV)
       compare.py --summary TSV   (medians and ranges over the rounds recorded in TSV)
With bf16, PyTorch runs under `torch.autocast("cpu", torch.bfloat16)`, the counterpart of zoo's
`--precision bf16` (f32 weights, bf16 compute).
Run by compare.sh, which produces the JSON and gives Python the glibc malloc settings zoo
applies to itself (without them PyTorch page-faults every large buffer in again). Needs torch and torchvision (scripts/reference/setup.sh
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


def alexnet_cifar(attention=None) -> nn.Module:
    """zoo/alexnet-cifar.yaml as PyTorch: 5 conv (+ReLU), LRN after conv1/conv2, 3/2 max-pool, 3 FC.

    `attention(channels)`, when given, builds the module placed after every conv stage (after
    its LRN, before its pooling), as the attention mixins' `at: [conv1, ..., conv5]` place it.
    """

    def lrn():
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

    def att(c):
        return attention(c) if attention else nn.Identity()

    return nn.Sequential(
        nn.Conv2d(3, 64, 5, padding=2), nn.ReLU(inplace=True), lrn(), att(64), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), lrn(), att(192),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True), att(384),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True), att(256),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), att(256), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 3 * 3, 1024), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU(inplace=True),
        nn.Linear(1024, 10),
    )


def se(c):
    """zoo/mixins/se.yaml's block: timm's squeeze-and-excitation, reduction 16."""
    from timm.layers.squeeze_excite import SEModule
    return SEModule(c, rd_ratio=1 / 16)


def spatial(c):
    """zoo/mixins/spatial.yaml's block: timm's CBAM spatial attention, 7x7."""
    from timm.layers.cbam import SpatialAttn
    return SpatialAttn(kernel_size=7)


MODELS = {
    # card name -> (constructor, input size, classes). The attention twins (timm, in .venv-ref)
    # show what PyTorch itself pays for a block: time them beside their backbone, e.g.
    # `zoo speed alexnet-cifar alexnet-cifar-se alexnet-cifar-spatial --batch 128
    # --train-batch 128 --json > t.json`, then `compare.py t.json` with compare.sh's
    # GLIBC_TUNABLES (zoo's malloc settings).
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), 224, 1000),
    "alexnet-cifar": (alexnet_cifar, 32, 10),
    "alexnet-cifar-se": (lambda: alexnet_cifar(se), 32, 10),
    "alexnet-cifar-spatial": (lambda: alexnet_cifar(spatial), 32, 10),
}


def rate(model, batch, size, classes, mode, runs, bf16):
    """Median images/s over `runs` timed passes after a warm-up."""
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % classes
    if mode == "inference":
        model.eval()

        def step():
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                model(x)
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

    # Warm up to steady state: at least 3 steps and 1 s (a fresh model's first steps run slow
    # while oneDNN builds its kernels and the allocator grows).
    start, steps = time.perf_counter(), 0
    while steps < 3 or time.perf_counter() - start < 1.0:
        step()
        steps += 1
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        step()
        rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def summary(path):
    """Per row of the rounds in `path`: median and range of zoo's rate, PyTorch's, and the
    ratio of each round (so a ratio's range shows how far the box moved between rounds)."""
    rounds = {}
    with open(path) as f:
        for line in f:
            card, mode, batch, zoo, ref = line.split("\t")
            rounds.setdefault((card, mode, int(batch)), []).append((float(zoo), float(ref)))
    def spread(values, digits):
        m, lo, hi = statistics.median(values), min(values), max(values)
        return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"
    n = max(len(v) for v in rounds.values())
    print(f"\nMedian (range) over {n} rounds:\n")
    print("| card | mode | batch | zoo images/s | PyTorch images/s | zoo / PyTorch |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (card, mode, batch), pairs in rounds.items():
        zoo, ref = [p[0] for p in pairs], [p[1] for p in pairs]
        ratio = [z / r for z, r in pairs]
        print(f"| {card} | {mode} | {batch} | {spread(zoo, 1)} | {spread(ref, 1)} | "
              f"{spread(ratio, 2)} |")


def main(args):
    if args[:1] == ["--summary"] and len(args) == 2:
        return summary(args[1])
    bf16, record = False, None
    while args[:1] in (["--precision"], ["--record"]):
        if len(args) < 2:
            sys.exit(__doc__)
        if args[0] == "--precision":
            if args[1] not in ("f32", "bf16"):
                sys.exit("--precision takes f32 or bf16")
            bf16 = args[1] == "bf16"
        else:
            record = args[1]
        args = args[2:]
    if not args:
        sys.exit(__doc__)
    paths = args
    rows = [row for p in paths for row in json.load(open(p))]
    torch.manual_seed(0)
    precision = "bf16 autocast" if bf16 else "fp32"
    print(f"PyTorch {torch.__version__} eager, {precision}, {torch.get_num_threads()} threads; "
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
        torch_rate = rate(model, row["batch"], size, classes, row["mode"], runs, bf16)
        print(f"| {card} | {row['mode']} | {row['batch']} | {row['median']:.1f} | "
              f"{torch_rate:.1f} | {row['median'] / torch_rate:.2f} |", flush=True)
        if record:
            with open(record, "a") as f:
                f.write(f"{card}\t{row['mode']}\t{row['batch']}\t{row['median']}\t{torch_rate}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
