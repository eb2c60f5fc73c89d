"""Padding-free training with the reference tools: Hugging Face transformers' LlamaForCausalLM (random weights,
SDPA attention) with a PEFT LoRA adapter, its micro-batches built by transformers' DataCollatorWithFlattening
(each micro-batch's examples concatenated into one row, position_ids restarting per example, the first label of
each example replaced by -100; transformers derives a block-diagonal causal mask from the position_ids), AdamW,
gradient accumulation over the micro-batches of each step. Reads the steps to run from a JSON file
({"steps": [[[{"input_ids": [...], "labels": [...]}, ...], ...], ...]}: steps of micro-batches of examples);
one warm-up step (the first), then `rounds` passes over the others, the fastest kept. Prints one JSON line:
tokens/s over the examples' tokens. Exit 3 when transformers or peft is not installed."""
import argparse
import json
import sys
import time

import torch

try:
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithFlattening, LlamaConfig, LlamaForCausalLM
except ImportError as e:
    print(f'hf_flatten.py: {e}', file=sys.stderr)
    sys.exit(3)

p = argparse.ArgumentParser()
p.add_argument('--data', required=True)
p.add_argument('--shape', required=True, help='vocab,hidden,intermediate,layers,heads')
p.add_argument('--r', type=int, default=80)
p.add_argument('--rounds', type=int, default=2)
p.add_argument('--threads', type=int, default=0)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
vocab, hidden, intermediate, layers, heads = [int(v) for v in a.shape.split(',')]
cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg)
model.config.use_cache = False
lcfg = LoraConfig(r=a.r, lora_alpha=2 * a.r, lora_dropout=0.0,
                  target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'])
model = get_peft_model(model, lcfg)
model.train()
params = [q for q in model.parameters() if q.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
collate = DataCollatorWithFlattening(return_tensors='pt')
with open(a.data) as f:
    steps = json.load(f)['steps']


def run(step):
    """One optimizer step over its micro-batches; returns the examples' tokens."""
    tokens = 0
    for micro in step:
        batch = collate([{'input_ids': e['input_ids'], 'labels': e['labels']} for e in micro])
        out = model(input_ids=batch['input_ids'], labels=batch['labels'], position_ids=batch['position_ids'])
        (out.loss / len(step)).backward()
        tokens += batch['input_ids'].numel()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return tokens


run(steps[0])
best = 0.0
for _ in range(a.rounds):
    t0 = time.perf_counter()
    tokens = sum(run(s) for s in steps[1:])
    best = max(best, tokens / (time.perf_counter() - t0))
print(json.dumps({'tokens_per_s': best, 'transformers': transformers.__version__, 'peft': peft.__version__,
                  'torch': torch.__version__, 'attention': model.config._attn_implementation}))
