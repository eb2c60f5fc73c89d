// The Runs screen: every run with its state; the curves of the runs ticked in the list, overlaid and
// updated live (metrics.jsonl followed over one event stream); the focused run's adapters, checkpoints,
// log, config, evaluation table and expert-load heatmaps; Stop and Resume.
import { api, badge, clear, fmt, h, HttpError } from './dom.js';
import { CurveChart, heatmap, type Point } from './charts.js';
import { JobLog } from './joblog.js';
import type { EvalReport, Run, RunDetail } from './types.js';

interface MetricDef {
  key: string;
  title: string;
  y: string;
  eval?: boolean;
  log?: boolean;
  zero?: boolean;
  format?: string;
}

const METRICS: MetricDef[] = [
  { key: 'loss', title: 'Training loss', y: 'cross-entropy' },
  { key: 'aux', title: 'Router aux loss (MixLoRA)', y: 'load-balance loss' },
  { key: 'lr', title: 'Learning rate', y: 'lr', zero: true, format: '.1e' },
  { key: 'grad_norm', title: 'Gradient norm', y: 'norm (before clipping)' },
  { key: 'tokens_per_s', title: 'Throughput', y: 'tokens/s', zero: true },
  { key: 'eval_loss', title: 'Eval loss', y: 'held-out loss', eval: true },
  { key: 'eval_accuracy', title: 'Eval accuracy', y: 'mean accuracy', eval: true },
];

export class RunsView {
  readonly el = h('div', { class: 'runs-layout' });
  private readonly list = h('aside', { class: 'run-list card' });
  private readonly main = h('section', { class: 'run-main' });
  private runs: Run[] = [];
  private focus: string | null = null;
  private readonly compare = new Set<string>();
  private charts = new Map<string, { chart: CurveChart | null; box: HTMLElement; def: MetricDef }>();
  private seriesOfRun = new Map<string, Set<string>>();
  private source: EventSource | null = null;
  private followed = '';
  private timer: number | null = null;
  private jobLog: JobLog | null = null;
  private detailOf = '';
  private detail: RunDetail | null = null;
  private readonly head = h('div', { class: 'run-head' });
  private readonly chartGrid = h('div', { class: 'charts-grid' });
  private readonly panels = h('div', { class: 'panels' });

  constructor() {
    this.el.append(this.list, this.main);
    this.main.append(this.head, this.chartGrid, this.panels);
  }

  /** Shown with `#runs/<id>` (or the newest run). */
  async show(id: string | null): Promise<void> {
    await this.refresh();
    const target = id ?? this.focus ?? this.runs[0]?.id ?? null;
    if (target !== this.focus) {
      this.focus = target;
      if (target && this.compare.size <= 1) {
        this.compare.clear();
        this.compare.add(target);
      } else if (target) this.compare.add(target);
    }
    this.renderList();
    await this.renderFocus(true);
    this.follow();
    if (this.timer === null) this.timer = window.setInterval(() => void this.tick(), 2000);
  }

  hide(): void {
    if (this.timer !== null) window.clearInterval(this.timer);
    this.timer = null;
    this.source?.close();
    this.source = null;
    this.followed = '';
  }

  private async tick(): Promise<void> {
    const before = JSON.stringify(this.runs.map((r) => [r.id, r.state, r.adapters.length, r.hasEval, r.job]));
    await this.refresh();
    const after = JSON.stringify(this.runs.map((r) => [r.id, r.state, r.adapters.length, r.hasEval, r.job]));
    if (before !== after) {
      this.renderList();
      await this.renderFocus(false);
    } else this.renderSteps();
  }

  private async refresh(): Promise<void> {
    this.runs = await api<Run[]>('/api/runs');
  }

  private renderList(): void {
    const items = this.runs.map((r) =>
      h(
        'li',
        { class: r.id === this.focus ? 'run-item focused' : 'run-item', 'data-run': r.id },
        h('input', {
          type: 'checkbox',
          title: 'overlay its curves',
          checked: this.compare.has(r.id),
          onchange: (e: Event) => {
            if ((e.target as HTMLInputElement).checked) this.compare.add(r.id);
            else this.compare.delete(r.id);
            this.follow();
          },
        }),
        h(
          'a',
          { href: `#runs/${encodeURIComponent(r.id)}`, class: 'run-link' },
          h('span', { class: 'run-name' }, r.id),
          badge(r.state),
          h('span', { class: 'run-meta', 'data-steps': r.id }, stepsText(r)),
        ),
      ),
    );
    clear(
      this.list,
      h(
        'div',
        { class: 'list-head' },
        h('h2', {}, 'Runs'),
        h('a', { href: '#new', class: 'button small' }, '+ New run'),
      ),
      this.runs.length === 0
        ? h('p', { class: 'muted' }, 'No runs yet in the runs folder. Start one from New run.')
        : h('ul', {}, items),
      h('p', { class: 'hint' }, 'Tick runs to overlay their curves.'),
    );
  }

  private renderSteps(): void {
    for (const r of this.runs) {
      const el = this.list.querySelector(`[data-steps="${CSS.escape(r.id)}"]`);
      if (el) el.textContent = stepsText(r);
    }
  }

  private async renderFocus(force: boolean): Promise<void> {
    const run = this.runs.find((r) => r.id === this.focus);
    if (!run) {
      clear(this.head, h('p', { class: 'muted' }, this.focus ? `No run '${this.focus}'.` : 'No run to show.'));
      clear(this.panels);
      return;
    }
    try {
      this.detail = await api<RunDetail>(`/api/runs/${encodeURIComponent(run.id)}`);
    } catch (e) {
      clear(this.head, h('p', { class: 'error' }, (e as Error).message));
      return;
    }
    const d = this.detail;
    const actions = h('div', { class: 'actions' });
    if (d.state === 'running' && d.job !== null)
      actions.append(
        h('button', { class: 'danger', 'data-action': 'stop', onclick: () => void this.act('stop') }, 'Stop'),
      );
    if (d.state === 'resumable' || d.state === 'stopped' || (d.state === 'failed' && d.checkpoints.length > 0))
      actions.append(
        h('button', { class: 'primary', 'data-action': 'resume', onclick: () => void this.act('resume') }, 'Resume'),
      );
    if (d.adapters.length > 0) {
      actions.append(h('a', { class: 'button', href: `#eval/${encodeURIComponent(d.id)}` }, 'Evaluate'));
      actions.append(h('a', { class: 'button', href: `#chat/${encodeURIComponent(d.id)}` }, 'Chat'));
    }
    clear(
      this.head,
      h(
        'div',
        { class: 'run-title' },
        h('h2', {}, d.id),
        badge(d.state),
        h('span', { class: 'muted' }, d.baseModel ?? ''),
      ),
      actions,
      d.error ? h('p', { class: 'error' }, d.error) : null,
    );
    // The panels change only with the run's state: a live run keeps its log scrolling.
    const key = JSON.stringify([d.id, d.state, d.adapters.length, d.hasEval, d.job, d.checkpoints.length]);
    if (!force && key === this.detailOf) return;
    this.detailOf = key;
    // The same job keeps its log (and its place in it); a new job gets a new one.
    if (this.jobLog?.id !== d.job) {
      this.jobLog?.dispose();
      this.jobLog = d.job !== null ? new JobLog(d.job, () => void this.tick()) : null;
    }
    clear(
      this.panels,
      h(
        'div',
        { class: 'card' },
        h('h3', {}, 'Adapters'),
        d.adapters.length === 0
          ? h('p', { class: 'muted' }, d.state === 'running' ? 'Saved when each adapter finishes.' : 'None saved.')
          : h(
              'table',
              { class: 'table' },
              h('tr', {}, h('th', {}, 'adapter'), h('th', {}, 'kind'), h('th', {}, 'folder')),
              d.adapters.map((a) =>
                h(
                  'tr',
                  {},
                  h('td', {}, a.best ? `${a.name} (best)` : a.name),
                  h('td', {}, a.kind),
                  h('td', { class: 'mono' }, `runs/${a.path}`),
                ),
              ),
            ),
        h('h3', {}, 'Checkpoints'),
        d.checkpoints.length === 0
          ? h('p', { class: 'muted' }, 'None.')
          : h('p', { class: 'mono' }, d.checkpoints.join(', ')),
      ),
      this.jobLog ? h('div', { class: 'card' }, h('h3', {}, 'Log'), this.jobLog.el) : null,
      d.eval ? h('div', { class: 'card wide' }, h('h3', {}, 'Evaluation'), evalTable(d.eval), heatmaps(d.eval)) : null,
      h(
        'details',
        { class: 'card wide' },
        h('summary', {}, d.yaml ? `Config (runs/${d.id}.yaml)` : 'Config (train_config.json)'),
        h('pre', { class: 'yaml' }, d.yaml ?? JSON.stringify(d.config, null, 2)),
      ),
    );
  }

  private async act(what: 'stop' | 'resume'): Promise<void> {
    if (!this.focus) return;
    try {
      await api(`/api/runs/${encodeURIComponent(this.focus)}/${what}`, {});
    } catch (e) {
      alert((e as HttpError).message);
    }
    await this.refresh();
    this.renderList();
    await this.renderFocus(true);
  }

  /** One event stream for the runs ticked; charts made afresh when the set changes. */
  private follow(): void {
    const ids = [...this.compare].filter((id) => this.runs.some((r) => r.id === id)).sort();
    const key = ids.join(',');
    if (key === this.followed && this.source) return;
    this.followed = key;
    this.source?.close();
    for (const { chart } of this.charts.values()) chart?.dispose();
    this.charts.clear();
    this.seriesOfRun.clear();
    clear(this.chartGrid);
    for (const m of METRICS) {
      const box = h('div', { class: 'chart card', 'data-metric': m.key, hidden: true });
      this.chartGrid.append(box);
      // Drawn once it has points (a chart drawn hidden has no width).
      this.charts.set(m.key, { chart: null, box, def: m });
    }
    if (ids.length === 0) {
      this.source = null;
      return;
    }
    const many = ids.length > 1;
    const series = ids.flatMap((id) =>
      (this.runs.find((r) => r.id === id)?.names ?? []).map((n) => (many ? `${id}/${n}` : n)),
    );
    this.source = new EventSource(`/api/follow?runs=${ids.map(encodeURIComponent).join(',')}`);
    this.source.onmessage = (ev) => {
      if (ev.data === '[DONE]') return;
      const msg = JSON.parse(ev.data as string) as {
        type: string;
        run: string;
        reset: boolean;
        lines: Record<string, unknown>[];
      };
      if (msg.type !== 'metrics') return;
      const known = this.seriesOfRun.get(msg.run) ?? new Set<string>();
      this.seriesOfRun.set(msg.run, known);
      const byMetric = new Map<string, Point[]>();
      for (const line of msg.lines) {
        const series = many ? `${msg.run}/${String(line.adapter)}` : String(line.adapter);
        known.add(series);
        const isEval = line.split === 'eval';
        for (const m of METRICS) {
          if (Boolean(m.eval) !== isEval) continue;
          const v = line[m.key];
          if (typeof v !== 'number' || !Number.isFinite(v)) continue;
          const list = byMetric.get(m.key) ?? [];
          list.push({ series, step: Number(line.step), value: v });
          byMetric.set(m.key, list);
        }
      }
      for (const [key, slot] of this.charts) {
        const points = byMetric.get(key) ?? [];
        if (points.length === 0 && (!msg.reset || slot.chart === null)) continue;
        if (slot.chart === null) {
          slot.box.hidden = false;
          const m = slot.def;
          slot.chart = new CurveChart(slot.box, m.title, m.y, {
            log: m.log ?? false,
            points: m.eval ?? false,
            zero: m.zero ?? false,
            ...(m.format ? { format: m.format } : {}),
            series,
          });
        }
        slot.chart.add(points, msg.reset ? [...known] : []);
      }
    };
  }
}

function stepsText(r: Run): string {
  const parts = Object.entries(r.steps).map(([a, s]) => `${a} ${s}`);
  return parts.length ? `step ${parts.join(', ')}` : r.state === 'running' ? 'starting…' : '';
}

export function evalTable(report: EvalReport): HTMLElement {
  const adapters = [...new Set(report.results.map((r) => r.adapter))];
  const tasks = [...new Set(report.results.map((r) => r.task))];
  const acc = (a: string, t: string) => report.results.find((r) => r.adapter === a && r.task === t)?.accuracy;
  const best = new Map(tasks.map((t) => [t, Math.max(...adapters.map((a) => acc(a, t) ?? -1))]));
  return h(
    'table',
    { class: 'table eval-table' },
    h(
      'tr',
      {},
      h('th', {}, 'adapter'),
      tasks.map((t) => h('th', { class: 'num' }, t)),
      h('th', { class: 'num' }, 'avg'),
    ),
    adapters.map((a) => {
      const vals = tasks.map((t) => acc(a, t) ?? 0);
      return h(
        'tr',
        { 'data-adapter': a },
        h('td', {}, a),
        tasks.map((t, i) =>
          h(
            'td',
            { class: vals[i] === best.get(t) && adapters.length > 1 ? 'num best' : 'num' },
            fmt(100 * vals[i]!, 3),
          ),
        ),
        h('td', { class: 'num' }, fmt((100 * vals.reduce((x, y) => x + y, 0)) / Math.max(1, vals.length), 3)),
      );
    }),
  );
}

export function heatmaps(report: EvalReport): HTMLElement {
  const box = h('div', { class: 'heatmaps' });
  for (const [adapter, byTask] of Object.entries(report.expert_load_by_adapter ?? {})) {
    const el = h('div', { class: 'heatmap' });
    box.append(el);
    heatmap(el, adapter, byTask, report.expert_load_std?.[adapter] ?? {});
  }
  return box;
}
