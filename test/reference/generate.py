"""Writes every reference fixture the tests read: python test/reference/generate.py OUT_DIR, with the
project's virtual environment (torch, transformers, peft)."""
import os
import sys

# PEFT stores target_modules as a set: a fixed hash seed keeps the adapter_config.json it writes identical
# from run to run.
if os.environ.get('PYTHONHASHSEED') != '0':
    os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, 'PYTHONHASHSEED': '0'})

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)

import adapters  # noqa: E402
import families  # noqa: E402
import hf_libraries  # noqa: E402
import models  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
models.generate(out)
families.write_models(out)
adapters.generate(out)
hf_libraries.generate(out)  # after models: it reads the model folders models.py wrote
print(f'reference fixtures written to {out}')
