"""A plain PyTorch eager LLaMA (HF semantics) with a KV cache and LoRA/DoRA/MixLoRA training steps,
written independently of mixlora, as the baseline the benchmarks compare against."""
import math

import torch
import torch.nn.functional as F


class Config:
    def __init__(self, vocab, hidden, intermediate, layers, heads, kv_heads=None):
        self.vocab, self.hidden, self.intermediate, self.layers, self.heads = vocab, hidden, intermediate, layers, heads
        self.kv_heads = kv_heads or heads
        self.head_dim = hidden // heads
        self.eps = 1e-5
        self.theta = 10000.0


def random_weights(cfg, seed=0):
    torch.manual_seed(seed)
    r = lambda *s: torch.randn(*s) * 0.02
    W = {'embed': r(cfg.vocab, cfg.hidden), 'norm': torch.ones(cfg.hidden), 'head': r(cfg.vocab, cfg.hidden), 'layers': []}
    kv = cfg.kv_heads * cfg.head_dim
    for _ in range(cfg.layers):
        W['layers'].append({
            'in_norm': torch.ones(cfg.hidden), 'post_norm': torch.ones(cfg.hidden),
            'q_proj': r(cfg.hidden, cfg.hidden), 'k_proj': r(kv, cfg.hidden), 'v_proj': r(kv, cfg.hidden), 'o_proj': r(cfg.hidden, cfg.hidden),
            'gate_proj': r(cfg.intermediate, cfg.hidden), 'up_proj': r(cfg.intermediate, cfg.hidden), 'down_proj': r(cfg.hidden, cfg.intermediate),
        })
    return W


def rms_norm(x, w, eps):
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope(cfg, positions):
    inv = 1.0 / (cfg.theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
    freqs = positions.float()[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), -1)
    return emb.cos(), emb.sin()


def rotate(x, cos, sin):
    h = x.shape[-1] // 2
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (as transformers does: the result stays in x's dtype)
    return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin


def forward(cfg, W, ids, cache=None, proj=None, mlp=None):
    """Logits [B, T, V]. proj(l, name, x) -> y overrides projections (adapters); mlp(l, x) the FFN."""
    B, T = ids.shape
    past = 0 if cache is None else cache['len']
    cos, sin = rope(cfg, torch.arange(past, past + T))
    h = F.embedding(ids, W['embed'])
    lin = proj or (lambda l, name, x: F.linear(x, W['layers'][l][name]))
    for l, L in enumerate(W['layers']):
        x = rms_norm(h, L['in_norm'], cfg.eps)
        q = lin(l, 'q_proj', x).view(B, T, cfg.heads, cfg.head_dim).transpose(1, 2)
        k = lin(l, 'k_proj', x).view(B, T, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = lin(l, 'v_proj', x).view(B, T, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is not None:
            if l >= len(cache['k']):
                cache['k'].append(k)
                cache['v'].append(v)
            else:
                cache['k'][l] = torch.cat((cache['k'][l], k), 2)
                cache['v'][l] = torch.cat((cache['v'][l], v), 2)
            k, v = cache['k'][l], cache['v'][l]
        S = k.shape[2]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.head_dim)
        if T > 1:
            mask = torch.ones(T, S, dtype=torch.bool).tril(S - T)
            scores = scores.masked_fill(~mask, float('-inf'))
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, cfg.hidden)
        h = h + lin(l, 'o_proj', o)
        x = rms_norm(h, L['post_norm'], cfg.eps)
        if mlp is not None:
            h = h + mlp(l, x)
        else:
            h = h + lin(l, 'down_proj', F.silu(lin(l, 'gate_proj', x)) * lin(l, 'up_proj', x))
    if cache is not None:
        cache['len'] += T
    return F.linear(rms_norm(h, W['norm'], cfg.eps), W['head'])
