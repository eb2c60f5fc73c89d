"""PyTorch eager baseline for bench/moe.ts: the MixLoRA block as the reference implementation computes it
(router, softmax, top-k, renormalise; each expert runs the frozen FFN with its LoRA on its own rows)."""
import argparse
import json

import torch
import torch.nn.functional as F

from timing import median_ms

p = argparse.ArgumentParser()
for k in ['threads', 'tokens', 'hidden', 'intermediate', 'experts', 'top-k', 'rank']:
    p.add_argument('--' + k, type=int, required=True)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
H, I, E, r = a.hidden, a.intermediate, a.experts, a.rank
Wg, Wu, Wd = torch.randn(I, H) * 0.02, torch.randn(I, H) * 0.02, torch.randn(H, I) * 0.02
router = (torch.randn(E, H) * 0.02).requires_grad_()
lora = {}
for e in range(E):
    for name, (out, inp) in {'gate': (I, H), 'up': (I, H), 'down': (H, I)}.items():
        lora[(e, name)] = ((torch.rand(r, inp) * 2 - 1) / inp ** 0.5).requires_grad_(), (torch.randn(out, r) * 0.01).requires_grad_()
scale = 2.0
x = torch.randn(a.tokens, H).requires_grad_()


def lin(name, e, inp, W):
    A, B = lora[(e, name)]
    return F.linear(inp, W) + F.linear(F.linear(inp, A), B) * scale


def step():
    logits = F.linear(x, router)
    w = logits.softmax(-1)
    w, sel = w.topk(a.top_k, -1)
    w = w / w.sum(-1, keepdim=True)
    out = torch.zeros_like(x)
    mask = F.one_hot(sel, E).permute(2, 1, 0)
    for e in range(E):
        idx, rows = torch.where(mask[e])
        xe = x[rows]
        h = F.silu(lin('gate', e, xe, Wg)) * lin('up', e, xe, Wu)
        out = out.index_add(0, rows, lin('down', e, h, Wd) * w[rows, idx, None])
    out.sum().backward()
    for t in [x, router] + [t for pair in lora.values() for t in pair]:
        t.grad = None


print(json.dumps({'referenceMs': median_ms(step, 7, 2)}))
