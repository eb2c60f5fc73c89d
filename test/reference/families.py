"""Tiny random Gemma, Gemma 2 and Phi-3 folders, and MixLoRA references on them.

The config.json files are written the way these families' files look on the Hub before transformers 5 (no
rope_parameters, Gemma with the legacy hidden_act "gelu", Gemma 2 without layer_types, Phi-3 with a top-level
partial_rotary_factor), so the loader meets the older layout here and the current one in the folders
transformers saves again (hf_libraries.py). Weights: the names and shapes transformers' own model class has,
filled from a seeded generator; norm weights are random around Gemma's 0 (applied as 1 + w) or 1.

The sizes make every family difference matter: Gemma's head_dim differs from hidden / heads; Gemma 2's
sliding window (4) is shorter than the sequences (12), its soft-caps are small enough to bend the scores and
logits, and query_pre_attn_scalar differs from head_dim; Phi-3 rotates half of each head and slides a window
of 6.

MixLoRA on these families has no library to compare with, so the reference is transformers' model itself
(eager attention) with its MLP replaced by adapters.Ref's per-expert MixLoRA block (experts over the fused
gate_up_proj for Phi-3, the model's GELU for Gemma) and LoRA added to the attention projections' outputs."""
import json
import os

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.activations import ACT2FN

import adapters
from common import save_safetensors, write_json

BASE = dict(vocab_size=61, hidden_size=32, intermediate_size=48, max_position_embeddings=128, bos_token_id=2, eos_token_id=1,
            pad_token_id=0)

CASES = {
    # No tie_word_embeddings key: GemmaConfig's default ties the head (the file has no lm_head.weight).
    'gemma-mqa-headdim': dict(BASE, model_type='gemma', num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                              head_dim=12, hidden_act='gelu', hidden_activation='gelu_pytorch_tanh', rms_norm_eps=1e-6,
                              rope_theta=10000.0, attention_bias=False),
    'gemma2-window-softcap': dict(BASE, model_type='gemma2', num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                  head_dim=16, hidden_act='gelu_pytorch_tanh', hidden_activation='gelu_pytorch_tanh',
                                  rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=12, sliding_window=4,
                                  attn_logit_softcapping=1.5, final_logit_softcapping=4.0, tie_word_embeddings=True),
    'phi3-partial-rotary': dict(BASE, model_type='phi3', num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                hidden_act='silu', rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
                                partial_rotary_factor=0.5, sliding_window=6, original_max_position_embeddings=128,
                                tie_word_embeddings=False, eos_token_id=32, pad_token_id=32),
}


def family_weights(cfg, seed):
    """Every persistent tensor of transformers' model for cfg, from a seeded generator (linears std 0.2,
    embeddings std 1), without lm_head when tied."""
    with torch.device('meta'):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    g = torch.Generator().manual_seed(seed)
    gemma = cfg['model_type'].startswith('gemma')
    W = {}
    for name, t in model.state_dict().items():
        if name == 'lm_head.weight' and model.config.tie_word_embeddings:
            continue
        if name.endswith('norm.weight'):
            W[name] = (0 if gemma else 1) + 0.1 * torch.randn(t.shape, generator=g)
        elif 'embed_tokens' in name:
            W[name] = torch.randn(t.shape, generator=g)
        else:
            W[name] = torch.randn(t.shape, generator=g) * 0.2
    return W


def write_models(out):
    for i, (name, cfg) in enumerate(CASES.items()):
        d = os.path.join(out, 'models', name)
        os.makedirs(d, exist_ok=True)
        write_json(os.path.join(d, 'config.json'), cfg)
        save_safetensors(os.path.join(d, 'model.safetensors'), family_weights(cfg, seed=1200 + i))


class FamilyRef(adapters.Ref):
    """adapters.Ref over transformers' model of another family: LoRA on the attention projections through
    forward hooks, the per-expert MixLoRA block in place of each MLP."""

    def __init__(self, model, acfg, seed):
        self.model = model
        W = {k: v.detach() for k, v in model.state_dict().items()}
        mcfg = dict(num_hidden_layers=model.config.num_hidden_layers, hidden_size=model.config.hidden_size)
        super().__init__(mcfg, W, acfg, seed)
        self.act = ACT2FN[model.config.hidden_activation if model.config.model_type == 'gemma2' else model.config.hidden_act]
        for l, layer in enumerate(model.model.layers):
            for p in self.plain:
                getattr(layer.self_attn, p).register_forward_hook(
                    lambda mod, inp, out, l=l, p=p: self.adapter(l, p, inp[0], out, mod.weight))
            layer.mlp.forward = lambda x, l=l: self.moe_mlp(l, x)

    def expert_ffn(self, l, e, x):
        W = self.W
        pre = f'model.layers.{l}.mlp.'

        def proj(p, inp):
            y = F.linear(inp, W[pre + p + '.weight'])
            if (l, p, e) in self.mods:
                y = adapters.lora_apply(inp, y, W[pre + p + '.weight'], None, self.mods[(l, p, e)], self.expert)
            return y

        if pre + 'gate_up_proj.weight' in W:  # Phi-3: the expert adapts the fused projection, then splits it
            gate, up = proj('gate_up_proj', x).chunk(2, dim=-1)
        else:
            gate, up = proj('gate_proj', x), proj('up_proj', x)
        return proj('down_proj', self.act(gate) * up)

    def forward(self, ids):
        self.records = []
        return self.model(input_ids=ids).logits.float()


# case -> (model folder, adapter_config.json)
MIXLORA_CASES = {
    'mixlora-gemma2': ('gemma2-window-softcap',
                       adapters.base_cfg('MIXLORA', ['q_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], routing_strategy='mixlora',
                                         num_experts=3, top_k=2, router_aux_loss_coef=0.01, act_fn='gelu_pytorch_tanh',
                                         expert_lora=dict(r=2, lora_alpha=4, lora_dropout=0.0))),
    'mixdora-phi3-fused': ('phi3-partial-rotary',
                           adapters.base_cfg('MIXLORA', ['qkv_proj', 'gate_up_proj', 'down_proj'], routing_strategy='mixlora', num_experts=3,
                                             top_k=2, router_aux_loss_coef=0.01, use_dora=True)),
    'mixlora-gemma': ('gemma-mqa-headdim',
                      adapters.base_cfg('MIXLORA', ['v_proj', 'gate_proj', 'down_proj'], routing_strategy='mixlora-dynamic', num_experts=4,
                                        top_p=0.6, router_aux_loss_coef=0.01)),
}


def bf16_deviation(model, acfg, seed, ids, labels, logits, grads, compute=torch.bfloat16, key='bf16_rel'):
    """This reference's own distance from its float32 results with the base model in bfloat16 (as
    adapters.bf16_deviation: the scale of the bfloat16 parity bound). compute=torch.float32: the model's
    weights rounded to bfloat16, computing in float32 (key bf16w_rel)."""
    if compute == torch.bfloat16:
        model = model.to(torch.bfloat16)
    else:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(p.dtype))
    for p in model.parameters():
        p.requires_grad_(False)
    ref = FamilyRef(model, acfg, seed)
    lg = ref.forward(ids)
    V = lg.shape[-1]
    ce = F.cross_entropy(lg[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    (ce + ref.aux_loss()).backward()
    g16 = ref.tensors(grads=True)
    num = sum(((grads[k] - g16[k].float()) ** 2).sum() for k in grads)
    den = sum((grads[k] ** 2).sum() for k in grads)
    return {f'{key}.logits': ((lg.detach().float() - logits).norm() / logits.norm()).reshape(1),
            f'{key}.grads': (num / den).sqrt().reshape(1)}


def mixlora_adapters(out, load_hf):
    """MixLoRA/MixDoRA cases in adapters.py's layout, appended to its index (the adapter parity test reads them)."""
    index_file = os.path.join(out, 'adapters', 'index.json')
    with open(index_file) as f:
        index = json.load(f)
    for i, (name, (model_name, acfg)) in enumerate(MIXLORA_CASES.items()):
        src = os.path.join(out, 'models', model_name)
        d = os.path.join(out, 'adapters', name)
        os.makedirs(os.path.join(d, 'model'), exist_ok=True)
        for f in ('config.json', 'model.safetensors'):
            with open(os.path.join(src, f), 'rb') as a, open(os.path.join(d, 'model', f), 'wb') as b:
                b.write(a.read())
        model = load_hf(src)
        for p in model.parameters():
            p.requires_grad_(False)
        ref = FamilyRef(model, acfg, seed=1300 + i)
        adapters.write_adapter(os.path.join(d, 'adapter'), ref, acfg)
        ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1400 + i))
        labels = ids.clone()
        labels[0, :3] = -100
        logits = ref.forward(ids)
        V = logits.shape[-1]
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
        aux = ref.aux_loss()
        (ce + aux).backward()
        expected = {'input_ids': ids, 'labels': labels, 'logits': logits.detach(), 'loss_ce': ce.detach().reshape(1),
                    'loss_aux': aux.detach().reshape(1)}
        for k, g in ref.tensors(grads=True).items():
            expected['grad.' + k] = g
        expected.update(bf16_deviation(load_hf(src), acfg, 1300 + i, ids, labels, logits.detach(), ref.tensors(grads=True)))
        expected.update(bf16_deviation(load_hf(src), acfg, 1300 + i, ids, labels, logits.detach(), ref.tensors(grads=True),
                                       compute=torch.float32, key='bf16w_rel'))
        save_safetensors(os.path.join(d, 'expected.safetensors'), expected)
        index.append(name)
    write_json(index_file, index)
