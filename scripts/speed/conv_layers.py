"""PyTorch's side of `cargo run --release -p zoo-models --example conv_layers`: each of
AlexNet-224's five convolutions alone: forward, the input and the weight gradient each alone
(aten's convolution_backward with one output asked for), and forward + backward (both
gradients, as zoo's example asks for both where the input is a leaf that needs them), on random
input, fastest of RUNS after a warm-up, printed in the example's format.

    .venv-ref/bin/python scripts/speed/conv_layers.py [f32|bf16] [BATCH] [RUNS]

`bf16` runs the convolution under bf16 autocast, as scripts/speed/compare.py does for whole
models. Threads: torch's default (all cores), as compare.py.
"""

import sys
import time

import torch
import torch.nn.functional as F

# (c_in, c_out, kernel, stride, padding, input side), as the Rust example's LAYERS.
LAYERS = [
    (3, 64, 11, 4, 2, 224),
    (64, 192, 5, 1, 2, 27),
    (192, 384, 3, 1, 1, 13),
    (384, 256, 3, 1, 1, 13),
    (256, 256, 3, 1, 1, 13),
]


def fastest(runs, f):
    f()
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv):
    precision = argv[0] if argv else "f32"
    if precision not in ("f32", "bf16"):
        sys.exit(f"precision {precision!r}: expected f32 or bf16")
    batch = int(argv[1]) if len(argv) > 1 else 32
    runs = max(1, int(argv[2]) if len(argv) > 2 else 9)
    bf16 = precision == "bf16"
    print(f"PyTorch {torch.__version__} {precision}, batch {batch}, fastest of {runs} runs, "
          f"{torch.get_num_threads()} threads")
    for c_in, c_out, k, stride, padding, side in LAYERS:
        x = torch.randn(batch, c_in, side, side, requires_grad=True)
        w = (0.1 * torch.randn(c_out, c_in, k, k)).requires_grad_()

        def forward():
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                return F.conv2d(x, w, stride=stride, padding=padding)

        def fwd():
            with torch.no_grad():
                forward()

        def fwd_bwd():
            x.grad = w.grad = None
            forward().float().sum().backward()

        ho = wo = (side + 2 * padding - k) // stride + 1
        # Autocast runs the backward in bf16: the gradients alone are timed on bf16 operands.
        dtype = torch.bfloat16 if bf16 else torch.float32
        xd, wd = x.detach().to(dtype), w.detach().to(dtype)
        grad = torch.ones(batch, c_out, ho, wo, dtype=dtype)

        def gradient(mask):
            def run():
                with torch.no_grad():
                    torch.ops.aten.convolution_backward(
                        grad, xd, wd, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
                        mask)
            return run

        macs = batch * c_out * ho * wo * c_in * k * k
        t_f, t_fb = fastest(runs, fwd), fastest(runs, fwd_bwd)
        t_dx = fastest(runs, gradient([True, False, False]))
        t_dw = fastest(runs, gradient([False, True, False]))
        print(f"{c_in:>3} -> {c_out:<3} k{k} s{stride} {side:>3}x{side:<3}  "
              f"forward {t_f * 1e3:6.1f} ms {2 * macs / t_f / 1e9:4.0f} GFLOP/s  "
              f"dx {t_dx * 1e3:6.1f} ms  dw {t_dw * 1e3:6.1f} ms  "
              f"forward+backward {t_fb * 1e3:6.1f} ms {6 * macs / t_fb / 1e9:4.0f} GFLOP/s")


if __name__ == "__main__":
    main(sys.argv[1:])
