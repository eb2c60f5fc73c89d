// Evaluation results as people read them: a task × adapter table with the average column, Markdown,
// JSON, and expert-load pictures.
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { writeChart, type ChartSpec } from '../io/charts.js';
import type { ExpertLoad } from './expert-load.js';
import type { TaskResult } from './scoring.js';

export interface EvalReport {
  results: TaskResult[];
  /** adapter -> task -> load */
  loads: Map<string, Map<string, ExpertLoad>>;
}

function grid(report: EvalReport): {
  adapters: string[];
  tasks: string[];
  cell: (a: string, t: string) => TaskResult | undefined;
} {
  const adapters = [...new Set(report.results.map((x) => x.adapter))];
  const tasks = [...new Set(report.results.map((x) => x.task))];
  return { adapters, tasks, cell: (a, t) => report.results.find((x) => x.adapter === a && x.task === t) };
}

const pct = (x: number) => (100 * x).toFixed(1);

/** Rows: adapters; columns: tasks and their average (accuracy in %). */
export function textTable(report: EvalReport, markdown = false): string {
  const { adapters, tasks, cell } = grid(report);
  const header = ['adapter', ...tasks, 'avg'];
  const rows = adapters.map((a) => {
    const accs = tasks.map((t) => cell(a, t)!.accuracy);
    return [a, ...accs.map(pct), pct(accs.reduce((x, y) => x + y, 0) / accs.length)];
  });
  if (markdown) {
    return [
      `| ${header.join(' | ')} |`,
      `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
      ...rows.map((row) => `| ${row.join(' | ')} |`),
    ].join('\n');
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

/** The --json document: results, and expert load per task and layer (for the first MixLoRA adapter;
 * every MixLoRA adapter under expert_load_by_adapter). */
export function jsonReport(report: EvalReport): Record<string, unknown> {
  const byAdapter: Record<string, Record<string, Record<string, number[]>>> = {};
  const stdByAdapter: Record<string, Record<string, number>> = {};
  for (const [adapter, tasks] of report.loads) {
    byAdapter[adapter] = {};
    stdByAdapter[adapter] = {};
    for (const [task, load] of tasks) {
      byAdapter[adapter]![task] = Object.fromEntries(load.fractions.map((f, l) => [String(l), f]));
      stdByAdapter[adapter]![task] = load.meanStd;
    }
  }
  const first = [...report.loads.keys()][0];
  return {
    results: report.results,
    expert_load: first ? byAdapter[first] : {},
    expert_load_by_adapter: byAdapter,
    expert_load_std: stdByAdapter,
  };
}

function heatmapSpec(adapter: string, tasks: Map<string, ExpertLoad>): ChartSpec {
  const values = [...tasks].flatMap(([task, load]) =>
    load.fractions.flatMap((f, layer) => f.map((fraction, expert) => ({ task, layer, expert, fraction }))),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: `expert load: ${adapter}`,
      subtitle: 'share of routed slots per layer and expert; std across experts in brackets',
    },
    data: { values },
    facet: {
      column: {
        field: 'task',
        type: 'nominal',
        sort: [...tasks.keys()],
        title: null,
        header: {
          labelExpr: `datum.value + ' (std ' + format(${JSON.stringify(Object.fromEntries([...tasks].map(([t, l]) => [t, l.meanStd])))}[datum.value], '.3f') + ')'`,
        },
      },
    },
    spec: {
      width: 160,
      height: 20 * (values.length ? Math.max(...values.map((v) => v.layer)) + 1 : 1),
      mark: 'rect',
      encoding: {
        x: { field: 'expert', type: 'ordinal', title: 'expert' },
        y: { field: 'layer', type: 'ordinal', title: 'layer' },
        color: { field: 'fraction', type: 'quantitative', title: 'share', scale: { scheme: 'blues', domainMin: 0 } },
        tooltip: [{ field: 'fraction', format: '.3f' }],
      },
    },
  } as ChartSpec;
}

/** results.json, results.md, expert_load.json and expert-load-<adapter>.{svg,png} in `dir`. */
export async function writeReport(dir: string, report: EvalReport): Promise<string[]> {
  const written = [path.join(dir, 'results.json'), path.join(dir, 'results.md')];
  writeFileAtomic(written[0]!, JSON.stringify(jsonReport(report), null, 2) + '\n');
  const md = [
    `# Evaluation`,
    '',
    'Accuracy (%) per task; avg is the mean over tasks.',
    '',
    textTable(report, true),
    '',
  ];
  for (const [adapter, tasks] of report.loads) {
    md.push(`## Expert load of ${adapter}`, '', '| task | std across experts (mean over layers) |', '|---|---:|');
    for (const [task, load] of tasks) md.push(`| ${task} | ${load.meanStd.toFixed(4)} |`);
    md.push('', `![expert load](expert-load-${adapter}.png)`, '');
    written.push(...(await writeChart(heatmapSpec(adapter, tasks), path.join(dir, `expert-load-${adapter}`))));
  }
  writeFileAtomic(written[1]!, md.join('\n'));
  return written;
}
