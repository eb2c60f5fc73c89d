// The Export screen: a LoRA/DoRA adapter merged into its base model (a Hugging Face folder, `mixlora merge`),
// or any adapter's weights as the reference tools' adapter_model.bin (`mixlora convert --format bin`); the
// results go to the runs folder's exports/.
import { api, clear, h, HttpError } from './dom.js';
import { JobLog } from './joblog.js';
import type { JobInfo, Run } from './types.js';

export class ExportView {
  readonly el = h('div', { class: 'two-col' });
  private readonly form = h('form', { class: 'card' });
  private readonly out = h('div', {});
  private log: JobLog | null = null;

  constructor() {
    this.el.append(this.form, this.out);
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.run();
    });
  }

  async show(): Promise<void> {
    const runs = (await api<Run[]>('/api/runs')).filter((r) => r.adapters.length > 0);
    const adapters = runs.flatMap((r) => r.adapters);
    const select = h(
      'select',
      { id: 'export-adapter', name: 'adapter', onchange: () => this.kindChanged() },
      adapters.map((a) => h('option', { value: a.path, 'data-kind': a.kind }, `${a.path} (${a.kind})`)),
    );
    clear(
      this.form,
      h('h2', {}, 'Export'),
      adapters.length === 0 ? h('p', { class: 'muted' }, 'No run has saved adapters yet.') : null,
      h('div', { class: 'field' }, h('label', { for: 'export-adapter' }, 'Adapter'), select),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Format'),
        h(
          'div',
          { class: 'checks column' },
          h(
            'label',
            {},
            h('input', { type: 'radio', name: 'format', value: 'merged', checked: true }),
            ' merged into the base model (Hugging Face folder; LoRA and DoRA)',
          ),
          h(
            'label',
            {},
            h('input', { type: 'radio', name: 'format', value: 'bin' }),
            " adapter_model.bin (the reference tools' format)",
          ),
        ),
      ),
      h('p', { class: 'muted small' }, 'Written to the runs folder, under exports/.'),
      h('p', { class: 'error', hidden: true, 'data-error': '' }),
      h(
        'div',
        { class: 'form-actions' },
        h('button', { type: 'submit', class: 'primary', 'data-action': 'export' }, 'Export'),
      ),
    );
    this.kindChanged();
  }

  private kindChanged(): void {
    const opt = this.form.querySelector<HTMLSelectElement>('#export-adapter')?.selectedOptions[0];
    const mix = (opt?.dataset.kind ?? '').startsWith('Mix');
    const merged = this.form.querySelector<HTMLInputElement>('input[value=merged]');
    if (!merged) return;
    merged.disabled = mix;
    if (mix) this.form.querySelector<HTMLInputElement>('input[value=bin]')!.checked = true;
  }

  private async run(): Promise<void> {
    const err = this.form.querySelector<HTMLElement>('[data-error]')!;
    err.hidden = true;
    const adapter = this.form.querySelector<HTMLSelectElement>('#export-adapter')?.value;
    const format = this.form.querySelector<HTMLInputElement>('input[name=format]:checked')?.value;
    try {
      const { job, folder } = await api<{ job: number; folder: string }>('/api/export', { adapter, format });
      this.log?.dispose();
      const result = h('div', {});
      this.log = new JobLog(job, (j: JobInfo) => {
        if (j.status === 'completed') {
          const r = j.result as { folder: string; files: string[] };
          clear(
            result,
            h(
              'p',
              {},
              'Wrote ',
              h('span', { class: 'mono', 'data-export-folder': '' }, r.folder),
              ': ',
              r.files.join(', '),
            ),
          );
        }
      });
      clear(this.out, h('div', { class: 'card' }, h('h3', {}, `Export to ${folder}`), this.log.el, result));
    } catch (e) {
      err.textContent = (e as HttpError).message;
      err.hidden = false;
    }
  }
}
