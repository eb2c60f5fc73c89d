"""PyTorch eager baseline for bench/engine.ts: the same small op and LoRA linear, timed the same way."""
import argparse
import json

import torch

from timing import median_ms

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, required=True)
p.add_argument('--small-ops', type=int, required=True)
p.add_argument('--tokens', type=int, required=True)
p.add_argument('--hidden', type=int, required=True)
p.add_argument('--rank', type=int, required=True)
args = p.parse_args()
torch.set_num_threads(args.threads)

a = torch.ones(64)
b = torch.ones(64)


def small_ops():
    for _ in range(args.small_ops):
        a + b


small_us = median_ms(small_ops, 5, 1) * 1000 / args.small_ops

torch.manual_seed(0)
w = torch.randn(args.hidden, args.hidden) * 0.01
x = torch.randn(args.tokens, args.hidden).requires_grad_()
la = (torch.randn(args.rank, args.hidden) * 0.01).requires_grad_()
lb = (torch.randn(args.hidden, args.rank) * 0.01).requires_grad_()


def lora_step():
    y = torch.nn.functional.linear(x, w) + 2 * torch.nn.functional.linear(torch.nn.functional.linear(x, la), lb)
    y.sum().backward()
    x.grad = la.grad = lb.grad = None


lora_ms = median_ms(lora_step, 5, 1)
print(json.dumps({'smallOpUs': small_us, 'loraLinearMs': lora_ms}))
