// mixlora eval: commonsense QA accuracy of adapters (and the bare model), fused in the same batches,
// with the expert load of MixLoRA adapters.
import { Command, Option } from 'commander';
import path from 'node:path';
import { addModelOptions, intArg, openModel, type ModelCliOptions } from '../options.js';
import { createProgress } from '../progress.js';
import { UsageError } from '../../util/errors.js';

interface EvalOptions extends ModelCliOptions {
  adapter: string[];
  task: string[];
  data: string[];
  scoring: 'choice' | 'loglik';
  limit?: number;
  batchSize: number;
  promptTemplate: string;
  json?: boolean;
  out?: string;
  samples?: string;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function evalCommand(): Command {
  const cmd = new Command('eval')
    .description(
      'accuracy on commonsense QA tasks for one or more adapters (and the base model), evaluated in the same fused batches; expert load of MixLoRA adapters',
    )
    .option(
      '--adapter <dir>',
      "adapter folder; repeat for several; 'none' for the bare base model (default: none)",
      collect,
      [],
    )
    .requiredOption(
      '--task <name>',
      'task name (arc-e, arc-c, boolq, obqa, piqa, siqa, winogrande, hellaswag, or any name for your own --data); repeat',
      collect,
      [],
    )
    .option(
      '--data <file>',
      'data of the task at the same position (LLM-Adapters JSON or {query, choices, gold} JSONL); without any --data, the bundled test slices are used',
      collect,
      [],
    )
    .addOption(
      new Option(
        '--scoring <method>',
        'choice: compare candidate label tokens at the last prompt token (the paper); loglik: log-likelihood of each whole choice',
      )
        .choices(['choice', 'loglik'])
        .default('choice'),
    )
    .option('--limit <n>', 'the first N items of each task', intArg('--limit', 1))
    .option('--batch-size <n>', 'rows per forward pass', intArg('--batch-size', 1), 16)
    .option('--prompt-template <t>', 'template of LLM-Adapters records (as in training)', 'alpaca')
    .option('--json', 'print results (and expert load) as JSON')
    .option('--out <dir>', 'also write results.json, results.md and expert-load pictures here')
    .option(
      '--samples <file>',
      "write every item's scores as JSONL ({adapter, task, item, gold, pred, scores}: the choices' log-likelihoods with --scoring loglik, the candidate tokens' log-probabilities with choice)",
    );
  addModelOptions(cmd);
  return cmd.action(async (o: EvalOptions) => {
    const { loadTask, bundledData } = await import('../../eval/tasks.js');
    const { expertLoad } = await import('../../eval/expert-load.js');
    const { textTable, jsonReport, writeReport } = await import('../../eval/report.js');
    const { loadAdapter } = await import('../../adapters/io.js');
    const { readDistEnv } = await import('../../distributed/env.js');
    const { joinGroup, leaveGroup } = await import('../../distributed/group.js');
    const { rankDevice } = await import('../../distributed/backend.js');
    const { evaluateTaskSharded } = await import('../../eval/sharded.js');
    if (o.task.length === 0) throw new UsageError('give at least one --task');
    if (o.data.length > 0 && o.data.length !== o.task.length)
      throw new UsageError('give one --data per --task (in the same order), or none to use the bundled test slices');
    const files = o.task.map((t, i) => {
      const f = o.data[i] ?? bundledData(t);
      if (!f) throw new UsageError(`--task ${t}: no bundled data for this task; give --data FILE`);
      return f;
    });
    // Under `mixlora launch` (or torchrun): each rank scores a block of every task (--device cuda: on
    // cuda:LOCAL_RANK); rank 0 reports.
    const env = readDistEnv();
    const device = rankDevice(o.device, env);
    const group = joinGroup(env, device);
    const lead = group.rank === 0;
    const loaded = await openModel({ ...o, device });
    const specs = o.adapter.length ? o.adapter : ['none'];
    const targets = [];
    const used = new Set<string>();
    for (const spec of specs) {
      let name = spec === 'none' ? 'base' : path.basename(path.resolve(spec));
      for (let k = 2; used.has(name); k++) name = `${name}-${k}`;
      used.add(name);
      targets.push({
        name,
        // Evaluation never changes an adapter: its DoRA scales are computed once.
        adapter:
          spec === 'none' ? null : (await loadAdapter(spec, loaded.model, name)).freezeForInference(loaded.model),
      });
    }
    const progress = createProgress({ quiet: !lead });
    const results = [];
    const samples: string[] = [];
    const loads = new Map<string, Map<string, ReturnType<typeof expertLoad>>>();
    for (const [i, taskName] of o.task.entries()) {
      const task = loadTask(taskName, files[i]!, { template: o.promptTemplate, limit: o.limit ?? null });
      const bar = progress.bar(taskName, task.items.length);
      const scored = evaluateTaskSharded(group, loaded.model, loaded.tokenizer, targets, task, {
        method: o.scoring,
        batchSize: o.batchSize,
        onProgress: (n) => bar.update(n),
        keepSamples: Boolean(o.samples),
      });
      bar.stop();
      for (const x of scored.samples)
        samples.push(JSON.stringify({ ...x, pred: x.scores.indexOf(Math.max(...x.scores)) }));
      results.push(...scored.results);
      for (const [adapter, counts] of scored.counts) {
        const m = loads.get(adapter) ?? new Map();
        m.set(taskName, expertLoad(counts));
        loads.set(adapter, m);
      }
    }
    progress.stop();
    leaveGroup(group);
    if (!lead) return;
    if (o.samples) {
      const { writeFileAtomic } = await import('../../io/atomic.js');
      writeFileAtomic(o.samples, samples.map((l) => l + '\n').join(''));
    }
    const report = { results, loads };
    if (o.out) {
      const written = await writeReport(o.out, report);
      process.stderr.write(`wrote ${written.join(', ')}\n`);
    }
    process.stdout.write(o.json ? JSON.stringify(jsonReport(report)) + '\n' : textTable(report) + '\n');
  });
}
