"""PyTorch eager baseline of `mixlora bench`: one training step (forward, CE (+ aux), backward, AdamW) of a
LLaMA-shaped model with random weights and one LoRA/DoRA/MixLoRA/MixDoRA adapter, written independently
in the reference tools' style. MixLoRA's experts follow the reference's default path (each expert runs
the frozen FFN on its own rows); --variant shared computes the frozen gate/up projections once per token
(the reference's optional efficient operator). --device/--dtype and the shape flags run it on a GPU at
the shapes of `mixlora bench --preset llama2-7b` (base weights in --dtype, adapters in float32 as mixlora
and PEFT keep them), reporting the CUDA caching allocator's peaks."""
import argparse
import json
import math
import resource

import torch
import torch.nn.functional as F

from llama_eager import Config, forward, random_weights
from timing import median_ms

p = argparse.ArgumentParser()
p.add_argument('--method', required=True, choices=['lora', 'dora', 'mixlora', 'mixdora'])
p.add_argument('--threads', type=int, required=True)
p.add_argument('--steps', type=int, default=5)
p.add_argument('--warmup', type=int, default=2)
p.add_argument('--variant', default='reference', choices=['reference', 'shared'])
p.add_argument('--scored', type=int, default=0, help='score only the last N tokens of each row (0: all)')
p.add_argument('--device', default='cpu')
p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
p.add_argument('--shape', default='32000,512,1376,8,8', help='vocab,hidden,intermediate,layers,heads')
p.add_argument('--batch', type=int, default=4)
p.add_argument('--seq', type=int, default=256)
a = p.parse_args()
torch.set_num_threads(a.threads)
cuda = a.device.startswith('cuda')
if cuda:
    torch.cuda.set_device(a.device)
    torch.cuda.reset_peak_memory_stats()
torch.set_default_device(a.device)
dtype = getattr(torch, a.dtype)
cfg = Config(*[int(v) for v in a.shape.split(',')])
W = random_weights(cfg)
if dtype != torch.float32:
    W = {k: ([{n: t.to(dtype) for n, t in L.items()} for L in v] if k == 'layers' else v.to(dtype)) for k, v in W.items()}
ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj']
MLP = ['gate_proj', 'up_proj', 'down_proj']
moe = a.method in ('mixlora', 'mixdora')
dora = a.method in ('dora', 'mixdora')
r, alpha = (16, 32) if moe else (80, 160)
scale = alpha / r
E, K = 8, 2
torch.manual_seed(1)
params = []


def new_lora(W0):
    out, inp = W0.shape
    bound = 1 / math.sqrt(inp)
    m = {'A': (torch.rand(r, inp) * 2 * bound - bound).requires_grad_(), 'B': (torch.randn(out, r) * 0.01).requires_grad_()}
    if dora:
        m['M'] = (W0.float() + scale * m['B'] @ m['A']).norm(dim=1).detach().requires_grad_()
    params.extend(m.values())
    return m


def lora_out(m, x, base, W0):
    # Adapters in float32; the result in the base's dtype.
    delta = F.linear(F.linear(x.float(), m['A']), m['B']) * scale
    if 'M' not in m:
        return base + delta.to(base.dtype)
    norm = (W0.float() + scale * (m['B'] @ m['A'])).norm(dim=1).detach()
    return ((m['M'] / norm) * (base.float() + delta)).to(base.dtype)


loras = {}
routers = []
for l, L in enumerate(W['layers']):
    for name in (ATTN if moe else ATTN + MLP):
        loras[(l, name)] = new_lora(L[name])
    if moe:
        routers.append((torch.randn(E, cfg.hidden) * 0.02).requires_grad_())
        params.append(routers[-1])
        for e in range(E):
            for name in MLP:
                loras[(l, name, e)] = new_lora(L[name])


def proj(l, name, x):
    base = F.linear(x, W['layers'][l][name])
    m = loras.get((l, name))
    return lora_out(m, x, base, W['layers'][l][name]) if m else base


records = []


def moe_mlp(l, x):
    B, T, H = x.shape
    flat = x.reshape(-1, H)
    L = W['layers'][l]
    logits = F.linear(flat.float(), routers[l])
    probs = logits.softmax(-1)
    weights, selected = probs.topk(K, -1)
    weights = weights / weights.sum(-1, keepdim=True)
    records.append((probs, selected))
    mask = F.one_hot(selected, E).permute(2, 1, 0)
    out = torch.zeros_like(flat)
    if a.variant == 'shared':
        common_g, common_u = F.linear(flat, L['gate_proj']), F.linear(flat, L['up_proj'])
    for e in range(E):
        idx, rows = torch.where(mask[e])
        xe = flat[rows]
        if a.variant == 'shared':
            g = lora_out(loras[(l, 'gate_proj', e)], xe, common_g[rows], L['gate_proj'])
            u = lora_out(loras[(l, 'up_proj', e)], xe, common_u[rows], L['up_proj'])
        else:
            g = lora_out(loras[(l, 'gate_proj', e)], xe, F.linear(xe, L['gate_proj']), L['gate_proj'])
            u = lora_out(loras[(l, 'up_proj', e)], xe, F.linear(xe, L['up_proj']), L['up_proj'])
        h = F.silu(g) * u
        y = lora_out(loras[(l, 'down_proj', e)], h, F.linear(h, L['down_proj']), L['down_proj'])
        out = out.index_add(0, rows, (y * weights[rows, idx, None]).to(out.dtype))
    return out.reshape(B, T, H)


opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
torch.manual_seed(200)
ids = torch.randint(0, cfg.vocab, (a.batch, a.seq))
labels = ids.clone()
if a.scored:
    labels[:, :a.seq - a.scored] = -100


def step():
    records.clear()
    logits = forward(cfg, W, ids, proj=proj, mlp=moe_mlp if moe else None)
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, cfg.vocab), labels[:, 1:].reshape(-1), ignore_index=-100)
    if moe:
        probs = torch.cat([p for p, _ in records])
        counts = torch.cat([F.one_hot(s, E).sum(1) for _, s in records]).float().mean(0)
        loss = loss + 0.01 * E * (counts * probs.mean(0)).sum()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()


ms = median_ms(step, a.steps, a.warmup)
tokens = a.batch * a.seq
mib = lambda b: b / 2**20
print(json.dumps({'method': a.method, 'variant': a.variant, 'impl': 'pytorch-eager', 'ms_per_step': ms, 'ms_per_token': ms / tokens,
                  'tokens_per_s': tokens / (ms / 1000), 'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  'peak_cuda_allocated_mib': mib(torch.cuda.max_memory_allocated()) if cuda else None,
                  'peak_cuda_reserved_mib': mib(torch.cuda.max_memory_reserved()) if cuda else None,
                  'torch': torch.__version__}))
