"""Tiny random models in Hugging Face layout and their reference logits from common.py's
hand-written forward pass (hf_libraries.py checks the same folders with transformers itself)."""
import os

import torch

from common import llama_forward, random_model, save_safetensors, write_json, write_model

BASE = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, rms_norm_eps=1e-5, max_position_embeddings=128)

CASES = {
    'llama-mha-bias': dict(BASE, model_type='llama', num_attention_heads=4, num_key_value_heads=4, attention_bias=True, mlp_bias=True,
                           tie_word_embeddings=False, rope_theta=10000.0),
    'llama-gqa-llama3-tied': dict(BASE, model_type='llama', num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0,
                                  rope_scaling=dict(rope_type='llama3', factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                                    original_max_position_embeddings=16)),
    'mistral-gqa-window': dict(BASE, model_type='mistral', num_attention_heads=4, num_key_value_heads=1, sliding_window=4, tie_word_embeddings=False,
                               rope_theta=10000.0),
    'qwen2-bias-tied': dict(BASE, model_type='qwen2', num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0,
                            use_sliding_window=False),
    'llama-bf16-linear': dict(BASE, model_type='llama', num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0,
                              rope_scaling=dict(type='linear', factor=2.0), torch_dtype='bfloat16'),
}


def generate(out):
    index = []
    for i, (name, cfg) in enumerate(CASES.items()):
        dtype = torch.bfloat16 if cfg.get('torch_dtype') == 'bfloat16' else torch.float32
        W = random_model(cfg, seed=100 + i, dtype=dtype)
        d = os.path.join(out, 'models', name)
        write_model(d, cfg, W)
        ids = torch.randint(0, cfg['vocab_size'], (2, 12), generator=torch.Generator().manual_seed(7 + i))
        with torch.no_grad():
            logits = llama_forward(cfg, {k: v.float() for k, v in W.items()}, ids)
        save_safetensors(os.path.join(d, 'expected.safetensors'), {'input_ids': ids, 'logits': logits})
        index.append(name)
    write_json(os.path.join(out, 'models', 'index.json'), index)
