"""What a Python user runs instead of mixlora serve for several LoRA adapters over one base: transformers +
PEFT's mixed-adapter batch generation (`model.generate(..., adapter_names=[...])`, each row through its own
adapter), on a randomly initialised LlamaForCausalLM of the given shape with 4 LoRA adapters (r 80, all
projections), greedy, every row exactly --new tokens (min_new_tokens), in process (no HTTP). Prints one JSON
line: generated tokens per second over the whole batch, and the seconds."""
import argparse
import json
import sys
import time

import torch

try:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError as e:
    print(f'peft_mixed_generate.py: {e}', file=sys.stderr)
    sys.exit(3)

p = argparse.ArgumentParser()
p.add_argument('--shape', required=True, help='vocab,hidden,intermediate,layers,heads')
p.add_argument('--rows', type=int, required=True)
p.add_argument('--prompt', type=int, default=32)
p.add_argument('--new', type=int, default=64)
p.add_argument('--adapters', type=int, default=4)
p.add_argument('--threads', type=int, default=0)
p.add_argument('--reps', type=int, default=2)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
vocab, hidden, intermediate, layers, heads = [int(v) for v in a.shape.split(',')]
cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).eval()
lcfg = LoraConfig(r=80, lora_alpha=160, lora_dropout=0.0,
                  target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'])
names = [f'lora{i}' for i in range(a.adapters)]
model = get_peft_model(model, lcfg, adapter_name=names[0])
for n in names[1:]:
    model.add_adapter(n, lcfg)
with torch.no_grad():
    for n, q in model.named_parameters():
        if 'lora_B' in n:
            q.normal_(0, 0.02)
model.eval()
ids = torch.tensor([[3 + ((i * 7919 + j * 104729) % (vocab - 10)) for j in range(a.prompt)] for i in range(a.rows)])
mask = torch.ones_like(ids)
row_adapters = [names[i % len(names)] for i in range(a.rows)]


def run():
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, adapter_names=row_adapters, max_new_tokens=a.new,
                             min_new_tokens=a.new, do_sample=False, pad_token_id=0)
    return out.shape[1] - a.prompt


run()  # warm-up
times = []
for _ in range(a.reps):
    t0 = time.perf_counter()
    new = run()
    times.append(time.perf_counter() - t0)
best = sorted(times)[len(times) // 2]
print(json.dumps({'tokens_per_s': a.rows * new / best, 'seconds': best, 'rows': a.rows, 'new': new,
                  'threads': torch.get_num_threads()}))
