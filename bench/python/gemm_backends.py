"""float32 x Wᵀ on the CPU: PyTorch's default (the BLAS its wheel links, MKL on x86) against oneDNN's
linear (the operator mkldnn::_linear_pointwise that torch.compile emits and that mixlora's addon calls
for float32 projections, native/kernels/linear.cc), on llama-58m's and TinyLlama's projection shapes, for a
decode step's few rows up to a training batch's 1024 tokens.

    .venv/bin/python bench/python/gemm_backends.py [--threads N]

Prints one line per shape to stderr (milliseconds and GFLOP/s of each, and their ratio), then the rows as
one JSON line on stdout (bench/run.ts reads it).
"""
import argparse
import json
import sys
import time

import torch

SHAPES = [(512, 512), (1376, 512), (512, 1376), (32000, 512), (5632, 2048), (2048, 5632)]
ROWS = [1, 8, 64, 1024]


def per_call_ms(f, budget_s=0.3):
    f()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_s or n < 3:
        f()
        n += 1
    return (time.perf_counter() - start) / n * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    onednn = torch.ops.mkldnn._linear_pointwise
    blas = "MKL" if torch.backends.mkl.is_available() else "other"
    print(f"torch {torch.__version__}, {args.threads} thread(s), BLAS: {blas}", file=sys.stderr)
    print("out x in | rows | default ms | oneDNN ms | default GFLOP/s | oneDNN GFLOP/s | default / oneDNN", file=sys.stderr)
    rows = []
    for out_f, in_f in SHAPES:
        w = torch.randn(out_f, in_f)
        for m in ROWS:
            x = torch.randn(m, in_f)
            ref = torch.nn.functional.linear(x, w)
            got = onednn(x, w, None, "none", [], "")
            assert torch.allclose(ref, got, rtol=1e-4, atol=1e-3), "oneDNN and the default disagree"
            a = per_call_ms(lambda: torch.nn.functional.linear(x, w))
            b = per_call_ms(lambda: onednn(x, w, None, "none", [], ""))
            flop = 2 * m * in_f * out_f
            print(f"{out_f} x {in_f} | {m} | {a:.3f} | {b:.3f} | {flop / a / 1e6:.1f} | {flop / b / 1e6:.1f} | {a / b:.2f}",
                  file=sys.stderr)
            rows.append({"out": out_f, "in": in_f, "rows": m, "default_ms": a, "onednn_ms": b})
    print(json.dumps({"torch": torch.__version__, "blas": blas, "threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
