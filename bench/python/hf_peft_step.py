"""PyTorch eager baseline with the reference tools themselves: one training step (forward, CE, backward,
AdamW) of a randomly initialised Hugging Face transformers LlamaForCausalLM with a PEFT LoRA or DoRA
adapter (PEFT keeps adapter weights in float32 over a bfloat16 base: autocast_adapter_dtype). Eager
mode, or with --compile the model wrapped in torch.compile (Inductor; the warm-up steps include the
compilation); transformers' default attention (SDPA). Prints one JSON line like train_step.py.
Exit 3 when transformers or peft is not installed (the caller falls back to train_step.py)."""
import argparse
import json
import resource
import sys

import torch

try:
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError as e:
    print(f'hf_peft_step.py: {e}', file=sys.stderr)
    sys.exit(3)

from timing import median_ms

p = argparse.ArgumentParser()
p.add_argument('--method', required=True, choices=['lora', 'dora'])
p.add_argument('--device', default='cuda')
p.add_argument('--dtype', default='bfloat16', choices=['float32', 'bfloat16'])
p.add_argument('--shape', required=True, help='vocab,hidden,intermediate,layers,heads')
p.add_argument('--batch', type=int, required=True)
p.add_argument('--seq', type=int, required=True)
p.add_argument('--steps', type=int, default=5)
p.add_argument('--warmup', type=int, default=2)
p.add_argument('--threads', type=int, default=0)
p.add_argument('--compile', action='store_true', help='torch.compile the model (default backend, Inductor)')
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
cuda = a.device.startswith('cuda')
if cuda:
    torch.cuda.set_device(a.device)
    torch.cuda.reset_peak_memory_stats()
vocab, hidden, intermediate, layers, heads = [int(v) for v in a.shape.split(',')]
dtype = getattr(torch, a.dtype)
cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max(4096, a.seq),
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
torch.manual_seed(0)
with torch.device(a.device):
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(prev)
model.config.use_cache = False
lcfg = LoraConfig(r=80, lora_alpha=160, lora_dropout=0.0, use_dora=a.method == 'dora',
                  target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'])
model = get_peft_model(model, lcfg)
with torch.no_grad():
    for n, q in model.named_parameters():
        if 'lora_B' in n:
            q.normal_(0, 0.01)  # nonzero B, as after some training (as `mixlora bench` does)
model.train()
params = [q for q in model.parameters() if q.requires_grad]
run = torch.compile(model) if a.compile else model
opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
torch.manual_seed(200)
ids = torch.randint(0, vocab, (a.batch, a.seq), device=a.device)


def step():
    loss = run(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()


ms = median_ms(step, a.steps, a.warmup)
tokens = a.batch * a.seq
mib = lambda b: b / 2**20
print(json.dumps({'method': a.method, 'impl': 'transformers+peft' + (' compiled' if a.compile else ''), 'ms_per_step': ms, 'ms_per_token': ms / tokens,
                  'tokens_per_s': tokens / (ms / 1000), 'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  'peak_cuda_allocated_mib': mib(torch.cuda.max_memory_allocated()) if cuda else None,
                  'peak_cuda_reserved_mib': mib(torch.cuda.max_memory_reserved()) if cuda else None,
                  'adapter_dtype': str(next(q for n, q in model.named_parameters() if 'lora_A' in n).dtype).replace('torch.', ''),
                  'torch': torch.__version__, 'transformers': transformers.__version__, 'peft': peft.__version__}))
