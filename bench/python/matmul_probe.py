"""PyTorch's side of `mixlora info --probe`: [n, n] x [n, n] products in float32 and bfloat16, timed the same
way (one warm-up product, then products for about `seconds`), in GFLOP/s (2n^3 operations each)."""
import argparse
import json

import torch
from timing import calls_per_s

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, required=True)
p.add_argument('--size', type=int, default=2048)
p.add_argument('--seconds', type=float, default=0.5)
p.add_argument('--float32-only', action='store_true', help='skip bfloat16 (minutes where the CPU emulates it)')
args = p.parse_args()
torch.set_num_threads(args.threads)


def gflops(dtype):
    a = torch.randn(args.size, args.size, dtype=dtype)
    b = torch.randn(args.size, args.size, dtype=dtype)
    return 2 * args.size**3 * calls_per_s(lambda: a @ b, args.seconds, 3) / 1e9


bf16 = None if args.float32_only else gflops(torch.bfloat16)
print(json.dumps({'gflops_fp32': gflops(torch.float32), 'gflops_bf16': bf16, 'size': args.size}))
