// lm-evaluation-harness against `mixlora serve`, as its users run it: lm_eval's own `local-completions`
// model (echo + logprobs over token ids, 4 prompts a request) on a multiple-choice task made from the
// bundled ARC-Easy slice as a local task, over stories260K converted to a Hugging Face folder. The
// references: lm_eval's `hf` model with `peft=` on the same folders for a PEFT LoRA adapter (same
// accuracy, every choice's log-likelihood within 1e-3), and `mixlora eval --scoring loglik`'s per-item
// scores for a MixLoRA adapter (which transformers cannot run).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { mixlora } from '../helpers/cli.js';
import { ROOT, tempDir } from '../helpers/fixtures.js';
import { missingModule, runPython, runPythonAsync } from '../helpers/python.js';
import { convertLlama2c } from '../../src/models/convert.js';
import { loadModel } from '../../src/models/load.js';
import { STORIES_BIN, STORIES_TOK } from '../helpers/fixtures.js';
import { startServer, writeAdapters, type Running } from './serve-fixtures.js';

const TASK = 'mixlora_arc_mc';
const ITEMS = 12;
const missing = missingModule('lm_eval.models.openai_completions') ?? missingModule('peft');

/** The first ARC-Easy items of the bundled slice as {query, choices, gold}: the question, and each answer's text. */
function arcItems(n: number): { query: string; choices: string[]; gold: number }[] {
  const file = path.join(ROOT, 'assets', 'data', 'commonsense', 'arc-e.test.jsonl.gz');
  const lines = zlib.gunzipSync(fs.readFileSync(file)).toString('utf8').trim().split('\n');
  return lines.slice(0, n).map((l) => {
    const r = JSON.parse(l) as { instruction: string; answer: string };
    const [head, answers] = r.instruction.split('\n\n') as [string, string];
    const question = head.replace(/^.*?question:\s*/, '');
    const choices = answers
      .split(/Answer\d+:\s*/)
      .map((s) => s.trim())
      .filter(Boolean);
    return { query: `Question: ${question}\nAnswer:`, choices, gold: Number(r.answer.replace('answer', '')) - 1 };
  });
}

const TASK_YAML = (data: string) => `task: ${TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: ${data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{query}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{gold}}"
metric_list:
  - metric: acc
`;

// Runs lm_eval's simple_evaluate for each [model, model_args] of a JSON list in one process (lm_eval and
// transformers take seconds to import); prints, per run, accuracy and each doc's choices' log-likelihoods.
const EVALUATE = `
import sys, json, logging
logging.disable(logging.WARNING)
from lm_eval import evaluator
from lm_eval.tasks import TaskManager
task_dir, runs, batch = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tasks = TaskManager(include_path=task_dir)
out = []
for model, model_args in runs:
    r = evaluator.simple_evaluate(model=model, model_args=model_args, tasks=["${TASK}"],
        task_manager=tasks, log_samples=True, batch_size=batch)
    samples = sorted(r["samples"]["${TASK}"], key=lambda s: s["doc_id"])
    out.append({"acc": r["results"]["${TASK}"]["acc,none"],
                "loglik": [[float(x[0]) for x in s["filtered_resps"]] for s in samples]})
print(json.dumps(out))
`;

const PEFT_ADAPTER = `
import sys, torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
torch.manual_seed(3)
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
p = get_peft_model(m, cfg)
# lora_B starts at zero (a no-op adapter): as if trained, it gets random weights.
with torch.no_grad():
    for n, w in p.named_parameters():
        if "lora_B" in n: w.normal_(0, 0.05)
p.save_pretrained(sys.argv[2])
`;

interface LmEvalResult {
  acc: number;
  loglik: number[][];
}

let dir: string;
let hf: string;
let taskDir: string;
let data: string;
let peftDir: string;
let mixloraDir: string;
let srv: Running | null = null;

before(async () => {
  if (missing) return;
  dir = tempDir();
  hf = path.join(dir, 'stories260K-hf');
  convertLlama2c(STORIES_BIN, STORIES_TOK, hf);
  taskDir = path.join(dir, 'tasks');
  fs.mkdirSync(taskDir);
  data = path.join(dir, 'arc.jsonl');
  fs.writeFileSync(
    data,
    arcItems(ITEMS)
      .map((i) => JSON.stringify(i))
      .join('\n') + '\n',
  );
  fs.writeFileSync(path.join(taskDir, `${TASK}.yaml`), TASK_YAML(data));
  peftDir = path.join(dir, 'peft-lora');
  runPython(PEFT_ADAPTER, [hf, peftDir], { env: { HF_HUB_OFFLINE: '1' } });
  const m = loadModel(hf);
  mixloraDir = writeAdapters(path.join(dir, 'ours'), m.model).mixlora!;
  m.model.dispose();
  srv = await startServer({
    modelPath: hf,
    modelName: 'base',
    adapters: [
      ['peft-lora', peftDir],
      ['mixlora', mixloraDir],
    ],
  });
});
after(async () => srv?.close());

const env = { HF_HUB_OFFLINE: '1', HF_DATASETS_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false' };

/** lm_eval's `local-completions` on a model the server serves: [model, model_args] for evaluate(). */
function served(model: string): [string, string] {
  const args = [
    `model=${model}`,
    `base_url=${srv!.url}/v1/completions`,
    'tokenizer_backend=huggingface',
    `tokenizer=${hf}`,
    'tokenized_requests=True',
    'add_bos_token=True',
    'max_retries=1',
    'num_concurrent=1',
  ].join(',');
  return ['local-completions', args];
}

async function evaluate(runs: [string, string][]): Promise<LmEvalResult[]> {
  const out = await runPythonAsync(EVALUATE, [taskDir, JSON.stringify(runs), '4'], { env });
  return JSON.parse(out.trim().split('\n').pop()!) as LmEvalResult[];
}

function largestDifference(a: number[][], b: number[][]): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  a.forEach((row, i) => {
    assert.equal(row.length, b[i]!.length, `doc ${i}: choices`);
    row.forEach((x, j) => (worst = Math.max(worst, Math.abs(x - b[i]![j]!))));
  });
  return worst;
}

test('lm_eval local-completions against the server equals lm_eval hf+peft on a PEFT LoRA adapter', async (t) => {
  if (missing) return t.skip(missing);
  const [ours, base, theirs] = (await evaluate([
    served('peft-lora'),
    served('base'),
    ['hf', `pretrained=${hf},peft=${peftDir},dtype=float32,device=cpu,add_bos_token=True`],
  ])) as [LmEvalResult, LmEvalResult, LmEvalResult];
  assert.equal(ours.loglik.length, ITEMS);
  // Not the zeros of a server that returns no prompt log-probabilities.
  assert.ok(
    ours.loglik.flat().every((x) => x < -0.01),
    JSON.stringify(ours.loglik),
  );
  const worst = largestDifference(ours.loglik, theirs.loglik);
  assert.ok(worst < 1e-3, `largest log-likelihood difference ${worst}`);
  assert.equal(ours.acc, theirs.acc);
  // The adapter is served: its scores differ from the base model's.
  assert.ok(largestDifference(base.loglik, ours.loglik) > 0.01, 'the adapter changes the scores');
});

test('lm_eval local-completions on a served MixLoRA adapter equals `mixlora eval --scoring loglik`', async (t) => {
  if (missing) return t.skip(missing);
  const [ours] = (await evaluate([served('mixlora')])) as [LmEvalResult];
  const samples = path.join(dir, 'samples.jsonl');
  const r = mixlora([
    'eval',
    '--model',
    hf,
    '--adapter',
    mixloraDir,
    '--task',
    TASK,
    '--data',
    data,
    '--scoring',
    'loglik',
    '--samples',
    samples,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const reference = fs
    .readFileSync(samples, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { item: number; scores: number[] })
    .sort((a, b) => a.item - b.item)
    .map((s) => s.scores);
  const worst = largestDifference(ours.loglik, reference);
  assert.ok(worst < 1e-3, `largest log-likelihood difference ${worst}`);
});
