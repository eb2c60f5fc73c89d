"""Independent PyTorch reference for mixlora's tests: a small safetensors writer and a LLaMA-family
forward pass written from the Hugging Face transformers modelling code's semantics (modeling_llama.py), sharing
no code with the TypeScript implementation."""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

DTYPE_NAMES = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.int64: 'I64', torch.float64: 'F64',
               torch.uint8: 'U8', torch.int8: 'I8'}


def save_safetensors(path, tensors, metadata=None):
    header = {}
    if metadata:
        header['__metadata__'] = metadata
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {'dtype': DTYPE_NAMES[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b' ' * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_json(path, obj):
    with open(path, 'w') as f:
        json.dump(obj, f, indent=1)


def rms_norm(x, w, eps):
    dt = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return w * x32.to(dt)


def inv_freq(cfg):
    hd = cfg.get('head_dim') or cfg['hidden_size'] // cfg['num_attention_heads']
    base = cfg.get('rope_theta', 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    sc = cfg.get('rope_scaling')
    if sc:
        kind = sc.get('rope_type', sc.get('type'))
        if kind == 'linear':
            inv = inv / sc['factor']
        elif kind == 'llama3':
            factor, lo, hi, old = sc['factor'], sc['low_freq_factor'], sc['high_freq_factor'], sc['original_max_position_embeddings']
            wavelen = 2 * math.pi / inv
            scaled = torch.where(wavelen > old / lo, inv / factor, inv)
            smooth = (old / wavelen - lo) / (hi - lo)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = (wavelen >= old / hi) & (wavelen <= old / lo)
            inv = torch.where(medium, smoothed, scaled)
    return inv.float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def linear_with(W, name, x, adapter=None, layer=None, module=None):
    y = F.linear(x, W[name + '.weight'], W.get(name + '.bias'))
    if adapter is not None:
        y = adapter(layer, module, x, y, W[name + '.weight'])
    return y


def llama_forward(cfg, W, ids, adapter=None, mlp=None, positions=None, key_mask=None):
    """Logits [B, T, V] (float32). `adapter(layer, module, x, base_y, weight)` adds adapter deltas;
    `mlp(layer, x)` replaces the feed-forward block (MixLoRA). key_mask [B, T]: 1 = token, 0 = pad."""
    B, T = ids.shape
    nh, nkv = cfg['num_attention_heads'], cfg.get('num_key_value_heads', cfg['num_attention_heads'])
    hd = cfg.get('head_dim') or cfg['hidden_size'] // nh
    eps = cfg.get('rms_norm_eps', 1e-6)
    h = W['model.embed_tokens.weight'][ids]
    if positions is None:
        positions = torch.arange(T).unsqueeze(0).expand(B, T)
    freqs = positions.float().unsqueeze(-1) * inv_freq(cfg)
    emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)
    cos, sin = emb.cos().to(h.dtype), emb.sin().to(h.dtype)
    i = torch.arange(T).unsqueeze(1)
    j = torch.arange(T).unsqueeze(0)
    allowed = j <= i
    window = cfg.get('sliding_window') if cfg['model_type'] == 'mistral' else None
    if window:
        allowed = allowed & (i - j < window)
    allowed = allowed.unsqueeze(0).unsqueeze(0)
    if key_mask is not None:
        allowed = (allowed & key_mask.bool()[:, None, None, :]) | (i == j)
    for l in range(cfg['num_hidden_layers']):
        p = f'model.layers.{l}.'
        x = rms_norm(h, W[p + 'input_layernorm.weight'], eps)
        q = linear_with(W, p + 'self_attn.q_proj', x, adapter, l, 'q_proj').view(B, T, nh, hd).transpose(1, 2)
        k = linear_with(W, p + 'self_attn.k_proj', x, adapter, l, 'k_proj').view(B, T, nkv, hd).transpose(1, 2)
        v = linear_with(W, p + 'self_attn.v_proj', x, adapter, l, 'v_proj').view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = scores.masked_fill(~allowed, float('-inf'))
        attn = scores.float().softmax(-1).to(q.dtype) @ v
        o = attn.transpose(1, 2).reshape(B, T, nh * hd)
        h = h + linear_with(W, p + 'self_attn.o_proj', o, adapter, l, 'o_proj')
        x = rms_norm(h, W[p + 'post_attention_layernorm.weight'], eps)
        if mlp is not None:
            h = h + mlp(l, x)
        else:
            g = linear_with(W, p + 'mlp.gate_proj', x, adapter, l, 'gate_proj')
            u = linear_with(W, p + 'mlp.up_proj', x, adapter, l, 'up_proj')
            h = h + linear_with(W, p + 'mlp.down_proj', F.silu(g) * u, adapter, l, 'down_proj')
    h = rms_norm(h, W['model.norm.weight'], eps)
    head = W['model.embed_tokens.weight'] if cfg.get('tie_word_embeddings') else W['lm_head.weight']
    return F.linear(h, head).float()


def random_model(cfg, seed, dtype=torch.float32):
    """Random weights in HF names for cfg (std 0.02 linears, norms near 1)."""
    g = torch.Generator().manual_seed(seed)
    H, I, V = cfg['hidden_size'], cfg['intermediate_size'], cfg['vocab_size']
    nh, nkv = cfg['num_attention_heads'], cfg.get('num_key_value_heads', cfg['num_attention_heads'])
    hd = cfg.get('head_dim') or H // nh
    qkv_bias = cfg['model_type'] == 'qwen2' or cfg.get('attention_bias', False)
    o_bias = cfg['model_type'] == 'llama' and cfg.get('attention_bias', False)
    mlp_bias = cfg.get('mlp_bias', False)
    r = lambda *s: (torch.randn(*s, generator=g) * 0.2)
    W = {'model.embed_tokens.weight': r(V, H) * 5}
    for l in range(cfg['num_hidden_layers']):
        p = f'model.layers.{l}.'
        W[p + 'input_layernorm.weight'] = 1 + 0.1 * torch.randn(H, generator=g)
        W[p + 'post_attention_layernorm.weight'] = 1 + 0.1 * torch.randn(H, generator=g)
        shapes = {'self_attn.q_proj': (nh * hd, H), 'self_attn.k_proj': (nkv * hd, H), 'self_attn.v_proj': (nkv * hd, H),
                  'self_attn.o_proj': (H, nh * hd), 'mlp.gate_proj': (I, H), 'mlp.up_proj': (I, H), 'mlp.down_proj': (H, I)}
        for name, shape in shapes.items():
            W[p + name + '.weight'] = r(*shape)
            bias = qkv_bias if name[-6:] in ('q_proj', 'k_proj', 'v_proj') else o_bias if name.endswith('o_proj') else mlp_bias
            if bias:
                W[p + name + '.bias'] = r(shape[0])
    W['model.norm.weight'] = 1 + 0.1 * torch.randn(H, generator=g)
    if not cfg.get('tie_word_embeddings'):
        W['lm_head.weight'] = r(V, H)
    return {k: v.to(dtype) for k, v in W.items()}


def write_model(dirname, cfg, W):
    os.makedirs(dirname, exist_ok=True)
    write_json(os.path.join(dirname, 'config.json'), cfg)
    save_safetensors(os.path.join(dirname, 'model.safetensors'), W)
