"""PyTorch eager baseline for bench/models.ts: prefill and KV-cache decode throughput."""
import argparse
import json

import torch

from timing import median_ms

from llama_eager import Config, forward, random_weights

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, required=True)
p.add_argument('--config', required=True)
a = p.parse_args()
torch.set_num_threads(a.threads)
c = json.loads(a.config)
cfg = Config(c['vocab'], c['hidden'], c['intermediate'], c['layers'], c['heads'])
W = random_weights(cfg)



ids = torch.randint(0, cfg.vocab, (c['prefill']['batch'], c['prefill']['tokens']))
prompt = torch.randint(0, cfg.vocab, (1, c['decode']['prompt']))
with torch.no_grad():
    prefill_ms = median_ms(lambda: forward(cfg, W, ids), 5, 1)

    def decode():
        cache = {'k': [], 'v': [], 'len': 0}
        nxt = forward(cfg, W, prompt, cache)[:, -1:].argmax(-1)
        for _ in range(1, c['decode']['newTokens']):
            nxt = forward(cfg, W, nxt, cache)[:, -1:].argmax(-1)

    decode_ms = median_ms(decode, 3, 1)
print(json.dumps({'prefillTokensPerS': c['prefill']['batch'] * c['prefill']['tokens'] / (prefill_ms / 1000),
                  'decodeTokensPerS': c['decode']['newTokens'] / (decode_ms / 1000)}))
