"""Writes every reference fixture the tests read: python3 test/reference/generate.py OUT_DIR."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)

import adapters  # noqa: E402
import models  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
models.generate(out)
adapters.generate(out)
print(f'reference fixtures written to {out}')
