// The Evaluate screen: adapters of runs (and the base model) on bundled tasks or a task file, run by
// `mixlora eval` in a child process; the accuracy table and the expert-load heatmaps; the results are kept
// in each evaluated run's eval/ folder.
import { api, clear, h, HttpError } from './dom.js';
import { JobLog } from './joblog.js';
import { evalTable, heatmaps } from './runs.js';
import type { EvalReport, Info, JobInfo, Run } from './types.js';

export class EvaluateView {
  readonly el = h('div', { class: 'two-col' });
  private readonly form = h('form', { class: 'card eval-form' });
  private readonly out = h('div', { class: 'eval-out' });
  private log: JobLog | null = null;

  constructor(private readonly info: Info) {
    this.el.append(this.form, this.out);
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.run();
    });
  }

  async show(runId: string | null): Promise<void> {
    const runs = (await api<Run[]>('/api/runs')).filter((r) => r.adapters.length > 0);
    const groups = new Map<string, Run[]>();
    for (const r of runs) {
      const key = r.baseModel ?? '?';
      groups.set(key, [...(groups.get(key) ?? []), r]);
    }
    clear(
      this.form,
      h('h2', {}, 'Evaluate'),
      runs.length === 0 ? h('p', { class: 'muted' }, 'No run has saved adapters yet.') : null,
      [...groups].map(([model, list]) =>
        h(
          'fieldset',
          {},
          h('legend', { class: 'plain' }, `Adapters on ${model}`),
          h(
            'div',
            { class: 'checks column' },
            list.flatMap((r) =>
              r.adapters.map((a) =>
                h(
                  'label',
                  {},
                  h('input', { type: 'checkbox', name: 'adapter', value: a.path, checked: runId === r.id && !a.best }),
                  h('span', { class: 'mono' }, a.path),
                  h('span', { class: 'muted' }, ` ${a.kind}`),
                ),
              ),
            ),
          ),
        ),
      ),
      h(
        'div',
        { class: 'field check' },
        h('label', {}, h('input', { type: 'checkbox', name: 'base', checked: true }), ' the base model too'),
      ),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Tasks'),
        h(
          'div',
          { class: 'checks' },
          this.info.tasks.map((t) =>
            h(
              'label',
              {},
              h('input', { type: 'checkbox', name: 'task', value: t, checked: t === 'arc-e' || t === 'boolq' }),
              t,
            ),
          ),
        ),
        h(
          'div',
          { class: 'row' },
          h(
            'div',
            { class: 'field' },
            h('label', { for: 'eval-limit' }, 'Items per task'),
            h('input', { id: 'eval-limit', name: 'limit', class: 'num', value: '100', inputmode: 'numeric' }),
          ),
          h(
            'div',
            { class: 'field' },
            h('label', { for: 'eval-scoring' }, 'Scoring'),
            h(
              'select',
              { id: 'eval-scoring', name: 'scoring' },
              h('option', { value: 'choice' }, 'choice (the paper)'),
              h('option', { value: 'loglik' }, 'log-likelihood'),
            ),
          ),
        ),
        h(
          'div',
          { class: 'row' },
          h(
            'div',
            { class: 'field' },
            h('label', { for: 'eval-data' }, 'or a task file (one task named above)'),
            h('input', { id: 'eval-data', name: 'data', list: 'eval-files', placeholder: 'optional' }),
            h(
              'datalist',
              { id: 'eval-files' },
              this.info.data.map((d) => h('option', { value: d })),
            ),
          ),
        ),
      ),
      h('p', { class: 'error', hidden: true, 'data-error': '' }),
      h(
        'div',
        { class: 'form-actions' },
        h('button', { class: 'primary', type: 'submit', 'data-action': 'evaluate' }, 'Evaluate'),
      ),
    );
  }

  private async run(): Promise<void> {
    const f = this.form;
    const err = f.querySelector<HTMLElement>('[data-error]')!;
    err.hidden = true;
    const checked = (name: string) =>
      [...f.querySelectorAll<HTMLInputElement>(`input[name=${name}]:checked`)].map((c) => c.value);
    const limitText = f.querySelector<HTMLInputElement>('input[name=limit]')!.value.trim();
    const body = {
      adapters: checked('adapter'),
      base: f.querySelector<HTMLInputElement>('input[name=base]')!.checked,
      tasks: checked('task'),
      limit: limitText === '' ? null : Number(limitText),
      scoring: f.querySelector<HTMLSelectElement>('select[name=scoring]')!.value,
      data: f.querySelector<HTMLInputElement>('input[name=data]')!.value.trim(),
    };
    try {
      const { job } = await api<{ job: number }>('/api/evaluate', body);
      this.log?.dispose();
      const table = h('div', { class: 'eval-result' });
      this.log = new JobLog(job, (j: JobInfo) => {
        if (j.status === 'completed') {
          const report = j.result as EvalReport;
          clear(
            table,
            h('h3', {}, 'Accuracy (%)'),
            evalTable(report),
            heatmaps(report),
            h('p', { class: 'muted small' }, 'Kept with the run (its eval/ folder).'),
          );
        }
      });
      clear(this.out, h('div', { class: 'card' }, h('h3', {}, 'Evaluation'), this.log.el, table));
    } catch (e) {
      err.textContent = (e as HttpError).message;
      err.hidden = false;
    }
  }
}
