"""Writes the reference fixtures zoo's parity tests read (tests/fixtures).

Every number comes from an independent definition: PyTorch's `max_pool2d` and
`local_response_norm`, timm's `SEModule`, `CbamModule`, `SpatialAttn`, `EcaModule` and
`NonLocalAttn`, and torchvision's `alexnet`. All in float64.

- ops/<op>.safetensors + .json: per case `input_<i>`, `output_<i>` and `grad_<i>`, the gradient
  of `sum(output * weight_<i>)` with respect to the input.
- attention/<kind>.safetensors + .json: the module's state dict (random, with non-trivial
  batch-norm statistics), `input`, and `output` in eval mode.
- alexnet/logits.safetensors + .json: torchvision AlexNet's logits, with weights and input from
  `formula` (below) so the 61M weights need not be committed; tests/src/formula.rs is its twin.
- imagenet/eval_transform.safetensors + .json (with --data): torchvision's ImageNet evaluation
  transform (PIL decode, Resize(256) bilinear, CenterCrop(224), ToTensor, Normalize) of one
  imagenet-sample photo, float32 (3, 224, 224), for `zoo predict`'s preprocessing.

Run through scripts/reference/setup.sh.
"""

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from timm.layers.cbam import CbamModule, SpatialAttn
from timm.layers.eca import EcaModule
from timm.layers.non_local_attn import NonLocalAttn
from timm.layers.squeeze_excite import SEModule

torch.set_default_dtype(torch.float64)


def formula(name, shape, scale):
    """Deterministic values for a named tensor: a fixed integer sequence mapped into [-scale, scale].

    `off` = sum of the name's bytes; element i is (((i + off) * 7919) % 2001 - 1000) / 1000 * scale.
    """
    off = sum(name.encode())
    n = math.prod(shape)
    i = torch.arange(n, dtype=torch.int64)
    v = (((i + off) * 7919) % 2001 - 1000).to(torch.float64) / 1000.0 * scale
    return v.reshape(shape)


def formula_scale(shape):
    """sqrt(3 / fan_in) for weights (unit variance per output), 0.05 for vectors."""
    if len(shape) >= 2:
        return math.sqrt(3.0 / math.prod(shape[1:]))
    return 0.05


def write(out, stem, tensors, meta):
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{stem}.safetensors"))
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")


def op_cases(out, stem, cases, fn):
    gen = torch.Generator().manual_seed(0)
    tensors, meta = {}, []
    for i, case in enumerate(cases):
        x = torch.rand(case["shape"], generator=gen) * 4 - 2
        x.requires_grad_(True)
        y = fn(x, case)
        w = torch.rand(y.shape, generator=gen) - 0.5
        (y * w).sum().backward()
        tensors |= {f"input_{i}": x.detach(), f"output_{i}": y.detach(),
                    f"weight_{i}": w, f"grad_{i}": x.grad}
        meta.append(case)
    write(out, stem, tensors, {"cases": meta})


def ops(out):
    pools = [
        {"shape": [1, 3, 13, 13], "kernel": 3, "stride": 2, "padding": 0},
        {"shape": [2, 5, 7, 9], "kernel": 3, "stride": 2, "padding": 1},
        {"shape": [1, 16, 27, 27], "kernel": 3, "stride": 2, "padding": 0},
        {"shape": [2, 1, 11, 11], "kernel": 2, "stride": 2, "padding": 0},
        {"shape": [1, 4, 6, 5], "kernel": 3, "stride": 1, "padding": 1},
    ]
    op_cases(out / "ops", "max_pool", pools,
             lambda x, c: F.max_pool2d(x, c["kernel"], c["stride"], c["padding"]))
    lrns = [
        {"shape": [1, 3, 13, 13], "size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0},
        {"shape": [2, 16, 7, 9], "size": 5, "alpha": 0.5, "beta": 0.75, "k": 1.0},
        {"shape": [1, 7, 5, 5], "size": 2, "alpha": 0.3, "beta": 0.5, "k": 1.0},
        {"shape": [2, 1, 9, 9], "size": 3, "alpha": 0.2, "beta": 0.75, "k": 2.0},
    ]
    op_cases(out / "ops", "lrn", lrns,
             lambda x, c: F.local_response_norm(x, c["size"], c["alpha"], c["beta"], c["k"]))


def randomise(module, gen):
    """Random parameters and batch-norm statistics, so no term of the forward is trivial."""
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("num_batches_tracked"):
                continue
            else:
                t.copy_((torch.rand(t.shape, generator=gen) - 0.5) * 0.8)


def attention(out):
    c, reduction = 32, 4
    modules = {
        "se": (SEModule(c, rd_ratio=1 / reduction, rd_divisor=1),
               {"type": "se", "reduction": reduction, "divisor": 1}),
        "cbam": (CbamModule(c, rd_ratio=1 / reduction, rd_divisor=1, spatial_kernel_size=7),
                 {"type": "cbam", "reduction": reduction, "divisor": 1, "kernel": 7}),
        "spatial": (SpatialAttn(kernel_size=5), {"type": "spatial", "kernel": 5}),
        "eca": (EcaModule(c, kernel_size=3), {"type": "eca", "kernel": 3}),
        "nonlocal": (NonLocalAttn(c, rd_ratio=1 / reduction, rd_divisor=1),
                     {"type": "nonlocal", "reduction": reduction, "divisor": 1}),
    }
    gen = torch.Generator().manual_seed(1)
    for stem, (module, spec) in modules.items():
        module = module.double().eval()
        randomise(module, gen)
        x = torch.rand((2, c, 9, 7), generator=gen) * 2 - 1
        with torch.no_grad():
            y = module(x)
        state = {k: v for k, v in module.state_dict().items()
                 if not k.endswith("num_batches_tracked")}
        write(out / "attention", stem, state | {"input": x, "output": y},
              {"module": spec, "channels": c, "input_shape": list(x.shape)})


def alexnet(out):
    model = torchvision.models.alexnet().double().eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t.copy_(formula(name, list(t.shape), formula_scale(list(t.shape))))
        x = formula("input", [1, 3, 224, 224], 1.0)
        logits = model(x)
    write(out / "alexnet", "logits", {"logits": logits},
          {"card": "alexnet", "input": "formula('input', [1, 3, 224, 224], 1.0)",
           "weights": "formula(name, shape, formula_scale(shape)) for torchvision's state dict"})


IMAGENET_PHOTO = "imagenet-sample/n01440764/n01440764_tench.JPEG"


def imagenet_transform(out, data):
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([
        T.Resize(256, interpolation=T.InterpolationMode.BILINEAR),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    img = Image.open(data / IMAGENET_PHOTO).convert("RGB")
    x = tf(img).to(torch.float32)
    write(out / "imagenet", "eval_transform", {"input": x},
          {"photo": IMAGENET_PHOTO, "photo_size": list(img.size),
           "transform": "Resize(256, bilinear) + CenterCrop(224) + ToTensor + Normalize(ImageNet)"})


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    parser.add_argument("--data", type=Path, default=None,
                        help="data root with imagenet-sample/ (ZOO_DATA); skips the photo fixture when absent")
    args = parser.parse_args()
    ops(args.out)
    attention(args.out)
    alexnet(args.out)
    if args.data is not None:
        imagenet_transform(args.out, args.data)
    print(f"fixtures written to {args.out}")


if __name__ == "__main__":
    main()
