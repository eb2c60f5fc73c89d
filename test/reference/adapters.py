"""Hand-written reference values for the adapters: LoRA, DoRA, MixLoRA, MixDoRA, dynamic and switch routing on
tiny random models with nonzero B. Written from the LoRA, DoRA and MixLoRA papers and PEFT's LoRA layer, independently
of the TypeScript code: per-expert parameters (not stacked), the plain per-expert FFN, masks by hand.
For each case: a model folder, an adapter folder in the file format under test, and expected.safetensors
with logits, the CE and aux losses, and the gradient of every adapter tensor (grad.<file key>)."""
import copy
import json
import math
import os

import torch
import torch.nn.functional as F

from common import llama_forward, random_model, save_safetensors, write_json, write_model

MODEL = dict(model_type='llama', vocab_size=53, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=False)
QWEN = dict(MODEL, model_type='qwen2', tie_word_embeddings=True)
ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj']
MLP = ['gate_proj', 'up_proj', 'down_proj']
PREFIX = {p: ('self_attn.' if p in ATTN + ['qkv_proj'] else 'mlp.') + p for p in ATTN + MLP + ['qkv_proj', 'gate_up_proj']}
EXPERT_TARGETS = MLP + ['gate_up_proj']  # Phi-3's experts adapt its fused gate/up projection


def lora_cfg(d, defaults=None):
    base = defaults or {}
    s = dict(r=d.get('r', base.get('r')), alpha=d.get('lora_alpha', base.get('alpha')), dora=d.get('use_dora', base.get('dora', False)),
             rslora=d.get('use_rslora', base.get('rslora', False)))
    s['scale'] = s['alpha'] / math.sqrt(s['r']) if s['rslora'] else s['alpha'] / s['r']
    return s


def dora_norm(W, A, B, scale):
    return (W.float() + scale * (B @ A)).norm(dim=1).detach()


def lora_apply(x, base_y, W, bias, p, s):
    """base_y = x Wᵀ + b; p = {A, B, M?}."""
    delta = (x.float() @ p['A'].T @ p['B'].T) * s['scale']
    if not s['dora']:
        return base_y + delta.to(base_y.dtype)
    wx = base_y - bias if bias is not None else base_y
    y = (p['M'] / dora_norm(W, p['A'], p['B'], s['scale'])) * (wx.float() + delta)
    if bias is not None:
        y = y + bias.float()
    return y.to(base_y.dtype)


def new_lora(g, out, inp, s, W, magnitude=True):
    p = {'A': torch.randn(s['r'], inp, generator=g) * 0.3, 'B': torch.randn(out, s['r'], generator=g) * 0.3}
    if s['dora'] and magnitude:
        p['M'] = dora_norm(W, p['A'], p['B'], s['scale']) * (1 + 0.2 * torch.randn(out, generator=g))
    elif s['dora']:
        p['M'] = dora_norm(W, p['A'], p['B'], s['scale'])
    for t in p.values():
        t.requires_grad_()
    return p


class Ref:
    """One adapter over one model; forward returns logits and records router outputs."""

    def __init__(self, mcfg, W, acfg, seed, save_magnitudes=True):
        self.mcfg, self.W, self.acfg = mcfg, W, acfg
        g = torch.Generator().manual_seed(seed)
        self.top = lora_cfg(acfg)
        self.moe = acfg['peft_type'] == 'MIXLORA'
        self.expert = lora_cfg(acfg.get('expert_lora', {}), self.top) if self.moe else None
        targets = acfg['target_modules']
        self.plain = [p for p in targets if not (self.moe and p in EXPERT_TARGETS)]
        self.experts = [p for p in targets if self.moe and p in EXPERT_TARGETS]
        self.save_magnitudes = save_magnitudes
        self.mods = {}
        self.routers = {}
        for l in range(mcfg['num_hidden_layers']):
            for p in self.plain:
                Wp = W[f'model.layers.{l}.{PREFIX[p]}.weight']
                self.mods[(l, p)] = new_lora(g, Wp.shape[0], Wp.shape[1], self.top, Wp, save_magnitudes)
            if self.moe:
                E = acfg['num_experts']
                self.routers[l] = (torch.randn(E, mcfg['hidden_size'], generator=g) * 0.5).requires_grad_()
                for p in self.experts:
                    Wp = W[f'model.layers.{l}.{PREFIX[p]}.weight']
                    for e in range(E):
                        self.mods[(l, p, e)] = new_lora(g, Wp.shape[0], Wp.shape[1], self.expert, Wp, save_magnitudes)
        self.records = []

    # ---- file format ----
    def key(self, mod, part):
        if len(mod) == 3:
            l, p, e = mod
            base = f'mixlora.layers.{l}.mlp.{p}.experts.{e}'
        elif self.moe:
            base = f'mixlora.layers.{mod[0]}.self_attn.{mod[1]}'
        else:
            base = f'base_model.model.model.layers.{mod[0]}.{PREFIX[mod[1]]}'
        return base + {'A': '.lora_A.weight', 'B': '.lora_B.weight', 'M': '.lora_magnitude_vector'}[part]

    def tensors(self, grads=False):
        out = {}
        for mod, p in self.mods.items():
            for part, t in p.items():
                if part == 'M' and not self.save_magnitudes and not grads:
                    continue
                out[self.key(mod, part)] = (t.grad if grads else t).detach().clone()
        for l, r in self.routers.items():
            out[f'mixlora.layers.{l}.mlp.moe_gate.weight'] = (r.grad if grads else r).detach().clone()
        return out

    # ---- forward ----
    def adapter(self, l, module, x, y, W):
        if (l, module) not in self.mods:
            return y
        bias = self.W.get(f'model.layers.{l}.{PREFIX[module]}.bias')
        s = self.top
        return lora_apply(x, y, W, bias, self.mods[(l, module)], s)

    def expert_ffn(self, l, e, x):
        W = self.W
        out = None
        h = None
        for p in ['gate_proj', 'up_proj']:
            Wp, bp = W[f'model.layers.{l}.mlp.{p}.weight'], W.get(f'model.layers.{l}.mlp.{p}.bias')
            y = F.linear(x, Wp, bp)
            if (l, p, e) in self.mods:
                y = lora_apply(x, y, Wp, bp, self.mods[(l, p, e)], self.expert)
            if p == 'gate_proj':
                h = F.silu(y)
            else:
                h = h * y
        Wd, bd = W[f'model.layers.{l}.mlp.down_proj.weight'], W.get(f'model.layers.{l}.mlp.down_proj.bias')
        out = F.linear(h, Wd, bd)
        if (l, 'down_proj', e) in self.mods:
            out = lora_apply(h, out, Wd, bd, self.mods[(l, 'down_proj', e)], self.expert)
        return out

    def moe_mlp(self, l, x):
        a = self.acfg
        B, T, H = x.shape
        E = a['num_experts']
        flat = x.reshape(-1, H)
        logits = flat.float() @ self.routers[l].T
        strategy = a['routing_strategy']
        temp = a.get('temperature', 0.0)
        probs = (logits / temp if strategy == 'mixlora-dynamic' and temp > 0 else logits).softmax(-1)
        n = flat.shape[0]
        weight = torch.zeros(n, E)          # routing weight of (token, expert), 0 = not routed
        chosen = torch.zeros(n, E)          # counts for the aux loss (before capacity)
        for t in range(n):
            if strategy == 'mixlora':
                v, i = probs[t].topk(a['top_k'])
                v = v / v.sum()
                for j in range(a['top_k']):
                    weight[t, i[j]] = v[j]
                    chosen[t, i[j]] = 1
            elif strategy == 'mixlora-dynamic':
                v, i = probs[t].sort(descending=True)
                running = 0.0
                for j in range(E):
                    if running > a['top_p']:
                        break
                    weight[t, i[j]] = v[j]
                    chosen[t, i[j]] = 1
                    running += float(v[j].detach())
        if strategy == 'mixlora-switch':
            cap = a['expert_capacity']
            for b in range(B):
                used = [0] * E
                for tt in range(T):
                    t = b * T + tt
                    e = int(probs[t].argmax())
                    chosen[t, e] = 1
                    used[e] += 1
                    if used[e] <= cap:
                        weight[t, e] = probs[t, e]
        # Weights need the router's gradient: rebuild them from probs with the selection as a mask.
        sel = weight != 0
        if strategy == 'mixlora':
            masked = probs * sel
            w = masked / masked.sum(-1, keepdim=True)
        else:
            w = probs * sel
        out = torch.zeros(n, H)
        for e in range(E):
            rows = sel[:, e].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            y = self.expert_ffn(l, e, flat[rows])
            out = out.index_add(0, rows, y.float() * w[rows, e].unsqueeze(1))
        self.records.append((logits, probs, chosen.sum(0)))
        return out.to(x.dtype).reshape(B, T, H)

    def forward(self, ids):
        self.records = []
        return llama_forward(self.mcfg, self.W, ids, adapter=self.adapter, mlp=self.moe_mlp if self.moe else None)

    def aux_loss(self):
        a = self.acfg
        if not self.moe or not self.records or not a.get('router_loss', True):
            return torch.zeros(())
        logits = torch.cat([r[0] for r in self.records])
        probs = torch.cat([r[1] for r in self.records])
        counts = sum(r[2] for r in self.records)
        N = probs.shape[0]
        E = a['num_experts']
        aux = a['router_aux_loss_coef'] * E * ((counts / N) * probs.mean(0)).sum()
        if a['routing_strategy'] == 'mixlora-switch':
            aux = aux + a.get('router_z_loss_coef', 0.001) * (torch.logsumexp(logits, -1) ** 2).mean()
        return aux


def write_adapter(d, ref, acfg, fmt='safetensors'):
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, 'adapter_config.json'), acfg)
    tensors = ref.tensors()
    if fmt in ('safetensors', 'both'):
        save_safetensors(os.path.join(d, 'adapter_model.safetensors'), tensors)
    if fmt in ('bin', 'both'):
        torch.save(tensors, os.path.join(d, 'adapter_model.bin'))


def base_cfg(peft, targets, **kw):
    c = dict(peft_type=peft, task_type='CAUSAL_LM', base_model_name_or_path='tiny', r=4, lora_alpha=8, lora_dropout=0.0,
             target_modules=targets, bias='none')
    c.update(kw)
    return c


CASES = {
    'lora': (MODEL, base_cfg('LORA', ATTN + MLP), {}),
    'dora-rslora': (MODEL, base_cfg('LORA', ['q_proj', 'v_proj', 'gate_proj', 'down_proj'], use_dora=True, use_rslora=True, lora_alpha=16), {}),
    'dora-qwen2-bias-no-magnitude': (QWEN, base_cfg('LORA', ['q_proj', 'k_proj', 'up_proj'], use_dora=True), {'save_magnitudes': False}),
    'mixlora': (MODEL, base_cfg('MIXLORA', ATTN + MLP, routing_strategy='mixlora', num_experts=4, top_k=2, router_aux_loss_coef=0.01,
                                expert_lora=dict(r=2, lora_alpha=6, lora_dropout=0.0)), {}),
    'mixdora': (MODEL, base_cfg('MIXLORA', ['q_proj', 'v_proj'] + MLP, routing_strategy='mixlora', num_experts=3, top_k=2, router_aux_loss_coef=0.01,
                                expert_lora=dict(r=2, lora_alpha=4, use_dora=True)), {}),
    'mixlora-dynamic': (MODEL, base_cfg('MIXLORA', ['k_proj'] + MLP, routing_strategy='mixlora-dynamic', num_experts=4, top_p=0.6, temperature=0.0,
                                        router_aux_loss_coef=0.01), {}),
    'mixlora-dynamic-temperature': (MODEL, base_cfg('MIXLORA', ['gate_proj', 'up_proj'], routing_strategy='mixlora-dynamic', num_experts=4, top_p=0.5,
                                                    temperature=2.0, router_aux_loss_coef=0.02), {}),
    'mixlora-switch': (MODEL, base_cfg('MIXLORA', ['o_proj'] + MLP, routing_strategy='mixlora-switch', num_experts=4, expert_capacity=3,
                                       router_aux_loss_coef=0.01, router_z_loss_coef=0.001, jitter_noise=0.0, ffn_dropout=0.0), {}),
}


def bf16_deviation(mcfg, acfg, opts, i, ids, labels, logits, grads, compute=torch.bfloat16, key='bf16_rel'):
    """How far this reference itself lands from its float32 results when the base weights are bfloat16 (the
    adapters stay float32): the scale the bfloat16 parity tests (MIXLORA_TEST_DTYPE) hold mixlora to. With
    compute=torch.float32 the weights are rounded to bfloat16 and the model computes in float32, as mixlora's
    bfloat16 models do on CPUs without bfloat16 arithmetic (src/tensor/compute-mode.ts): key bf16w_rel."""
    torch.manual_seed(0)
    W = {k: v.to(compute) for k, v in random_model(mcfg, seed=300 + i, dtype=torch.bfloat16).items()}
    ref = Ref(mcfg, W, acfg, seed=400 + i, **opts)
    lg = ref.forward(ids)
    V = lg.shape[-1]
    ce = F.cross_entropy(lg[:, :-1].float().reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    (ce + ref.aux_loss()).backward()
    g16 = ref.tensors(grads=True)
    num = sum(((grads[k] - g16[k].float()) ** 2).sum() for k in grads)
    den = sum((grads[k] ** 2).sum() for k in grads)
    rel = lambda a, b: ((a - b).norm() / b.norm()).reshape(1)
    return {f'{key}.logits': rel(lg.detach().float(), logits), f'{key}.grads': (num / den).sqrt().reshape(1)}


def generate(out):
    index = []
    for i, (name, (mcfg, acfg, opts)) in enumerate(CASES.items()):
        torch.manual_seed(0)
        W = random_model(mcfg, seed=300 + i)
        d = os.path.join(out, 'adapters', name)
        write_model(os.path.join(d, 'model'), mcfg, W)
        ref = Ref(mcfg, W, acfg, seed=400 + i, **opts)
        write_adapter(os.path.join(d, 'adapter'), ref, acfg, fmt='both' if name == 'mixlora' else 'safetensors')
        ids = torch.randint(0, mcfg['vocab_size'], (2, 9), generator=torch.Generator().manual_seed(500 + i))
        labels = ids.clone()
        labels[0, :3] = -100
        logits = ref.forward(ids)
        V = logits.shape[-1]
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
        aux = ref.aux_loss()
        (ce + aux).backward()
        expected = {'input_ids': ids, 'labels': labels, 'logits': logits.detach(), 'loss_ce': ce.detach().reshape(1), 'loss_aux': aux.detach().reshape(1)}
        for k, g in ref.tensors(grads=True).items():
            expected['grad.' + k] = g
        expected.update(bf16_deviation(mcfg, acfg, opts, i, ids, labels, logits.detach(), ref.tensors(grads=True)))
        expected.update(bf16_deviation(mcfg, acfg, opts, i, ids, labels, logits.detach(), ref.tensors(grads=True),
                                       compute=torch.float32, key='bf16w_rel'))
        save_safetensors(os.path.join(d, 'expected.safetensors'), expected)
        index.append(name)
        if name == 'mixlora':
            write_legacy(os.path.join(out, 'adapters', 'mixlora-legacy'), ref, acfg)
    write_json(os.path.join(out, 'adapters', 'index.json'), index)
    write_hostile(os.path.join(out, 'adapters', 'hostile'))


def write_legacy(d, ref, acfg):
    """The same MixLoRA adapter in the legacy m-LoRA layout (routing "mixtral", w1/w2/w3 names)."""
    legacy = {}
    names = {'gate_proj': 'w1_proj', 'down_proj': 'w2_proj', 'up_proj': 'w3_proj'}
    for k, t in ref.tensors().items():
        parts = k.split('.')
        if k.endswith('moe_gate.weight'):
            legacy[f'mixlora.layers.{parts[2]}.gate.weight'] = t
        elif '.experts.' in k:
            l, proj, e = parts[2], parts[4], parts[6]
            legacy[f'mixlora.layers.{l}.experts.{e}.{names[proj]}.{parts[7]}.weight'] = t
        else:
            legacy[k] = t
    cfg = copy.deepcopy(acfg)
    cfg['routing_strategy'] = 'mixtral'
    cfg['target_modules'] = [names.get(t, t) for t in cfg['target_modules']]
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, 'adapter_config.json'), cfg)
    torch.save(legacy, os.path.join(d, 'adapter_model.bin'))


class Exploit:
    def __reduce__(self):
        return (os.system, ('touch /tmp/mixlora-pickle-executed',))


def write_hostile(d):
    os.makedirs(d, exist_ok=True)
    cfg = base_cfg('LORA', ['q_proj'])
    write_json(os.path.join(d, 'adapter_config.json'), cfg)
    torch.save({'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': Exploit()}, os.path.join(d, 'adapter_model.bin'))
