// The New run screen: a training config as a form (model, data with a preview of the first records as they
// are tokenised, method and its fields, hyper-parameters, evaluation while training, presets). Every change
// is checked by the server with the parser of `mixlora train`; its error is shown at the field it names.
// "Show YAML" gives the config to run by hand; Start runs it.
import { api, clear, h, HttpError } from './dom.js';
import type { Info, Preset } from './types.js';

type Method = 'lora' | 'dora' | 'mixlora' | 'mixdora';
const MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const A = 'adapters.0';
const AD = 'adapters.0.adapter';

interface PreviewRecord {
  where: string;
  tokens: { text: string; scored: boolean }[];
  total: number;
  scored: number;
}

export class NewRunView {
  readonly el = h('div', { class: 'newrun-layout' });
  private readonly form = h('form', { class: 'card run-form', novalidate: true, autocomplete: 'off' });
  private readonly side = h('div', { class: 'side' });
  private readonly general = h('p', { class: 'error general', hidden: true, 'data-error': '' });
  private readonly yamlBox = h('pre', { class: 'yaml', hidden: true, 'data-yaml': '' });
  private readonly previewBox = h('div', { class: 'preview' });
  private readonly startButton = h(
    'button',
    { type: 'submit', class: 'primary', 'data-action': 'start' },
    'Start training',
  );
  private yaml = '';
  private timer: number | null = null;
  private checkSeq = 0;
  private built = false;
  private taken = new Set<string>();

  constructor(private readonly info: Info) {
    this.el.append(this.form, this.side);
  }

  async show(): Promise<void> {
    if (!this.built) {
      this.taken = new Set((await api<{ id: string }[]>('/api/runs')).map((r) => r.id));
      this.build();
      this.applyPreset(this.info.presets[1] ?? this.info.presets[0]!);
      this.built = true;
    }
    this.scheduleCheck();
  }

  private input(path: string, attrs: Record<string, string | number | boolean> = {}): HTMLInputElement {
    return h('input', {
      name: path,
      'data-path': path,
      id: `f-${path}`,
      ...attrs,
      oninput: () => this.scheduleCheck(),
    });
  }

  private field(label: string, control: HTMLElement, help = ''): HTMLElement {
    const path = control.getAttribute('data-path') ?? '';
    return h(
      'div',
      { class: 'field', 'data-field': path },
      h('label', { for: control.id || null }, label),
      control,
      help ? h('small', { class: 'help' }, help) : null,
      h('small', { class: 'field-error', 'data-error-for': path }),
    );
  }

  private select(path: string, options: [string, string][], onchange?: () => void): HTMLSelectElement {
    return h(
      'select',
      {
        name: path,
        'data-path': path,
        id: `f-${path}`,
        onchange: () => {
          onchange?.();
          this.scheduleCheck();
        },
      },
      options.map(([v, label]) => h('option', { value: v }, label)),
    );
  }

  private build(): void {
    const info = this.info;
    const presets = h(
      'select',
      {
        id: 'preset',
        onchange: (e: Event) => {
          const p = info.presets[Number((e.target as HTMLSelectElement).value)];
          if (p) this.applyPreset(p);
        },
      },
      info.presets.map((p, i) => h('option', { value: i }, p.name)),
    );
    const presetHelp = h('small', { class: 'help', id: 'preset-help' });
    presets.addEventListener(
      'change',
      () => (presetHelp.textContent = info.presets[Number(presets.value)]?.description ?? ''),
    );
    const modelList = h(
      'datalist',
      { id: 'models' },
      info.models.map((m) => h('option', { value: m })),
    );
    const tokList = h(
      'datalist',
      { id: 'tokenizers' },
      info.tokenizers.map((m) => h('option', { value: m })),
    );
    const dataArea = h('textarea', {
      name: `${A}.data`,
      'data-path': `${A}.data`,
      id: `f-${A}.data`,
      rows: 3,
      spellcheck: false,
      placeholder: 'one file per line (JSON or JSONL, .gz too)',
      oninput: () => this.scheduleCheck(),
    });
    const addData = h(
      'select',
      {
        class: 'add-file',
        onchange: (e: Event) => {
          const s = e.target as HTMLSelectElement;
          if (!s.value) return;
          dataArea.value = [...dataArea.value.split('\n').filter((l) => l.trim()), s.value].join('\n');
          s.value = '';
          this.scheduleCheck();
        },
      },
      h('option', { value: '' }, 'add a file…'),
      info.data.map((d) => h('option', { value: d }, d)),
    );
    const methods = h(
      'div',
      { class: 'segmented', role: 'radiogroup', 'data-path': 'method' },
      (['lora', 'dora', 'mixlora', 'mixdora'] as Method[]).map((m) =>
        h(
          'label',
          {},
          h('input', {
            type: 'radio',
            name: 'method',
            value: m,
            onchange: () => {
              this.methodChanged();
              this.scheduleCheck();
            },
          }),
          h('span', {}, { lora: 'LoRA', dora: 'DoRA', mixlora: 'MixLoRA', mixdora: 'MixDoRA' }[m]),
        ),
      ),
    );
    const modules = h(
      'div',
      { class: 'checks', 'data-path': `${AD}.target_modules`, id: `f-${AD}.target_modules` },
      MODULES.map((m) =>
        h(
          'label',
          {},
          h('input', { type: 'checkbox', name: 'module', value: m, onchange: () => this.scheduleCheck() }),
          m,
        ),
      ),
    );
    const tasks = h(
      'div',
      { class: 'checks', 'data-path': 'eval.tasks', id: 'f-eval.tasks' },
      info.tasks.map((t) =>
        h(
          'label',
          {},
          h('input', { type: 'checkbox', name: 'eval-task', value: t, onchange: () => this.scheduleCheck() }),
          t,
        ),
      ),
    );
    const num = (path: string, extra: Record<string, string | number> = {}) =>
      this.input(path, { type: 'text', inputmode: 'decimal', class: 'num', ...extra });
    this.form.append(
      h(
        'div',
        { class: 'form-head' },
        h('h2', {}, 'New run'),
        h('div', { class: 'field inline' }, h('label', { for: 'preset' }, 'Preset'), presets),
      ),
      presetHelp,
      this.general,
      h(
        'fieldset',
        {},
        h('legend', {}, 'Run'),
        h(
          'div',
          { class: 'row' },
          this.field(
            'Name',
            this.input('name', { type: 'text', placeholder: 'my-run' }),
            'its folder under the runs folder',
          ),
          this.field('Seed', num('seed')),
          this.field('Save every (steps)', num('save_steps'), 'a resumable checkpoint; 0: at the end only'),
        ),
      ),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Model'),
        modelList,
        tokList,
        h(
          'div',
          { class: 'row' },
          this.field(
            'Base model',
            this.input('base_model', { type: 'text', list: 'models', class: 'wide' }),
            'a folder, a llama2.c .bin, or a Hub id in the cache',
          ),
          this.field(
            'Tokenizer',
            this.input('tokenizer', { type: 'text', list: 'tokenizers', class: 'wide' }),
            'when not beside the model',
          ),
        ),
      ),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Data'),
        h(
          'div',
          { class: 'field', 'data-field': `${A}.data` },
          h('label', { for: `f-${A}.data` }, 'Training files'),
          dataArea,
          addData,
          h('small', { class: 'field-error', 'data-error-for': `${A}.data` }),
        ),
        h(
          'div',
          { class: 'row' },
          this.field(
            'Prompt template',
            this.select(`${A}.prompt_template`, [
              ['alpaca', 'alpaca'],
              ['none', 'none (instruction, input, output)'],
            ]),
          ),
          this.field('Cutoff length', num('cutoff_len'), 'tokens per example at most'),
          h(
            'div',
            { class: 'field check' },
            h('label', {}, this.input(`${A}.train_on_inputs`, { type: 'checkbox' }), ' score the prompt too'),
          ),
          h(
            'button',
            { type: 'button', class: 'button', 'data-action': 'preview', onclick: () => void this.preview() },
            'Preview records',
          ),
        ),
      ),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Method'),
        h(
          'div',
          { class: 'row' },
          this.field('Adapter name', this.input(`${A}.name`, { type: 'text' })),
          h('div', { class: 'field' }, h('label', {}, 'Method'), methods),
        ),
        h(
          'div',
          { class: 'row' },
          this.field('Rank r', num(`${AD}.r`)),
          this.field('Alpha', num(`${AD}.lora_alpha`)),
          this.field('Dropout', num(`${AD}.lora_dropout`)),
          h(
            'div',
            { class: 'field check' },
            h('label', {}, this.input(`${AD}.use_rslora`, { type: 'checkbox' }), ' rank-stabilised scaling'),
          ),
        ),
        h(
          'div',
          { class: 'field', 'data-field': `${AD}.target_modules` },
          h('label', {}, 'Target modules'),
          modules,
          h('small', { class: 'field-error', 'data-error-for': `${AD}.target_modules` }),
        ),
        h(
          'div',
          { class: 'row moe-only' },
          this.field(
            'Routing',
            this.select(
              `${AD}.routing_strategy`,
              [
                ['mixlora', 'top-k'],
                ['mixlora-dynamic', 'dynamic top-p'],
                ['mixlora-switch', 'switch (top-1)'],
              ],
              () => this.methodChanged(),
            ),
          ),
          this.field('Experts', num(`${AD}.num_experts`)),
          this.field('Top-k', num(`${AD}.top_k`)),
          h('div', { class: 'dynamic-only' }, this.field('Top-p', num(`${AD}.top_p`))),
          this.field('Aux loss coef', num(`${AD}.router_aux_loss_coef`)),
        ),
      ),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Training'),
        h(
          'div',
          { class: 'row' },
          this.field('Learning rate', num(`${A}.lr`)),
          this.field('Batch size', num(`${A}.batch_size`)),
          this.field('Micro-batch', num(`${A}.micro_batch_size`), 'gradient accumulation below the batch'),
          this.field('Epochs', num(`${A}.num_epochs`)),
          this.field('Max steps', num(`${A}.max_steps`)),
        ),
        h(
          'div',
          { class: 'row' },
          this.field(
            'Scheduler',
            this.select(`${A}.scheduler`, [
              ['constant', 'constant'],
              ['linear', 'linear'],
              ['cosine', 'cosine'],
            ]),
          ),
          this.field('Warm-up steps', num(`${A}.warmup_steps`)),
          this.field(
            'Optimizer',
            this.select(`${A}.optimizer`, [
              ['adamw', 'AdamW'],
              ['adamw8bit', 'AdamW, 8-bit state'],
              ['sgd', 'SGD'],
            ]),
          ),
          this.field('Weight decay', num(`${A}.weight_decay`)),
          this.field('Max grad norm', num(`${A}.max_grad_norm`)),
        ),
      ),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Evaluation while training'),
        h(
          'div',
          { class: 'field', 'data-field': 'eval.tasks' },
          h('label', {}, 'Tasks (bundled)'),
          tasks,
          h('small', { class: 'field-error', 'data-error-for': 'eval.tasks' }),
        ),
        h(
          'div',
          { class: 'row' },
          this.field('Every (steps)', num('eval.every'), '0: at the end only'),
          this.field('Items per task', num('eval.limit')),
        ),
      ),
      h(
        'div',
        { class: 'form-actions' },
        h(
          'button',
          { type: 'button', class: 'button', 'data-action': 'yaml', onclick: () => this.toggleYaml() },
          'Show YAML',
        ),
        this.startButton,
      ),
    );
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.start();
    });
    this.side.append(
      h(
        'div',
        { class: 'card' },
        h('h3', {}, 'YAML'),
        h('p', { class: 'muted small' }, 'The config as mixlora train reads it (Show YAML).'),
        this.yamlBox,
      ),
      h('div', { class: 'card' }, h('h3', {}, 'Data preview'), this.previewBox),
    );
    clear(
      this.previewBox,
      h(
        'p',
        { class: 'muted small' },
        'The first records as training tokenises them: the prompt in grey, the scored part highlighted.',
      ),
    );
  }

  private el$(path: string): HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement | null {
    return this.form.querySelector(`[data-path="${CSS.escape(path)}"]`);
  }

  private set(path: string, v: unknown): void {
    const el = this.el$(path);
    if (!el) return;
    if (el instanceof HTMLInputElement && el.type === 'checkbox') el.checked = v === true;
    else el.value = v === undefined || v === null ? '' : Array.isArray(v) ? v.join('\n') : String(v);
  }

  private applyPreset(p: Preset): void {
    const c = p.config as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    const a = (c.adapters?.[0] ?? {}) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    const ad = (a.adapter ?? {}) as Record<string, unknown>;
    let name = String(a.name ?? 'run');
    for (let k = 2; this.taken.has(name); k++) name = `${a.name}-${k}`;
    this.set('name', name);
    for (const k of ['seed', 'save_steps', 'base_model', 'tokenizer', 'cutoff_len']) this.set(k, c[k]);
    this.set(`${A}.name`, a.name);
    this.set(`${A}.data`, a.data);
    for (const k of [
      'prompt_template',
      'train_on_inputs',
      'lr',
      'batch_size',
      'micro_batch_size',
      'num_epochs',
      'max_steps',
      'scheduler',
      'warmup_steps',
      'optimizer',
      'weight_decay',
      'max_grad_norm',
    ])
      this.set(
        `${A}.${k}`,
        a[k] ??
          (k === 'optimizer'
            ? 'adamw'
            : k === 'scheduler'
              ? 'constant'
              : k === 'prompt_template'
                ? 'alpaca'
                : undefined),
      );
    for (const k of [
      'r',
      'lora_alpha',
      'lora_dropout',
      'use_rslora',
      'num_experts',
      'top_k',
      'top_p',
      'router_aux_loss_coef',
    ])
      this.set(`${AD}.${k}`, ad[k]);
    this.set(`${AD}.routing_strategy`, ad.routing_strategy ?? 'mixlora');
    const mix = ad.peft_type === 'MIXLORA';
    const method: Method = mix ? (ad.use_dora ? 'mixdora' : 'mixlora') : ad.use_dora ? 'dora' : 'lora';
    for (const r of this.form.querySelectorAll<HTMLInputElement>('input[name=method]')) r.checked = r.value === method;
    const mods = new Set((ad.target_modules as string[] | undefined) ?? ['q_proj', 'v_proj']);
    for (const cb of this.form.querySelectorAll<HTMLInputElement>('input[name=module]'))
      cb.checked = mods.has(cb.value);
    const ev = (c.eval ?? {}) as Record<string, unknown>;
    const evTasks = new Set((ev.tasks as string[] | undefined) ?? []);
    for (const cb of this.form.querySelectorAll<HTMLInputElement>('input[name=eval-task]'))
      cb.checked = evTasks.has(cb.value);
    this.set('eval.every', ev.every);
    this.set('eval.limit', ev.limit);
    (document.getElementById('preset-help') as HTMLElement).textContent = p.description;
    const select = document.getElementById('preset') as HTMLSelectElement | null;
    if (select) select.value = String(this.info.presets.indexOf(p));
    this.methodChanged();
    this.scheduleCheck();
  }

  private method(): Method {
    return (this.form.querySelector<HTMLInputElement>('input[name=method]:checked')?.value ?? 'lora') as Method;
  }

  private methodChanged(): void {
    const mix = this.method().startsWith('mix');
    for (const el of this.form.querySelectorAll<HTMLElement>('.moe-only')) el.hidden = !mix;
    const dynamic = this.el$(`${AD}.routing_strategy`)?.value === 'mixlora-dynamic';
    for (const el of this.form.querySelectorAll<HTMLElement>('.dynamic-only')) el.hidden = !dynamic;
  }

  /** The config the form describes: the keys of a training config (empty fields left out; a number field
   * that is not a number is sent as its text, for the parser to name). */
  config(): Record<string, unknown> {
    const text = (p: string) => (this.el$(p)?.value ?? '').trim();
    const num = (p: string) => {
      const t = text(p);
      if (t === '') return undefined;
      const n = Number(t);
      return Number.isFinite(n) ? n : t;
    };
    const bool = (p: string) => (this.el$(p) as HTMLInputElement | null)?.checked === true;
    const put = (o: Record<string, unknown>, k: string, v: unknown) => {
      if (v !== undefined && v !== '') o[k] = v;
    };
    const method = this.method();
    const mix = method.startsWith('mix');
    const adapter: Record<string, unknown> = { peft_type: mix ? 'MIXLORA' : 'LORA' };
    put(adapter, 'r', num(`${AD}.r`));
    put(adapter, 'lora_alpha', num(`${AD}.lora_alpha`));
    put(adapter, 'lora_dropout', num(`${AD}.lora_dropout`));
    adapter.target_modules = [...this.form.querySelectorAll<HTMLInputElement>('input[name=module]:checked')].map(
      (c) => c.value,
    );
    if (method.endsWith('dora')) adapter.use_dora = true;
    if (bool(`${AD}.use_rslora`)) adapter.use_rslora = true;
    if (mix) {
      const routing = text(`${AD}.routing_strategy`);
      adapter.routing_strategy = routing;
      put(adapter, 'num_experts', num(`${AD}.num_experts`));
      if (routing !== 'mixlora-switch') put(adapter, 'top_k', num(`${AD}.top_k`));
      if (routing === 'mixlora-dynamic') put(adapter, 'top_p', num(`${AD}.top_p`));
      put(adapter, 'router_aux_loss_coef', num(`${AD}.router_aux_loss_coef`));
    }
    const entry: Record<string, unknown> = { name: text(`${A}.name`), adapter };
    entry.data = text(`${A}.data`)
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    put(entry, 'prompt_template', text(`${A}.prompt_template`));
    if (bool(`${A}.train_on_inputs`)) entry.train_on_inputs = true;
    for (const k of [
      'lr',
      'batch_size',
      'micro_batch_size',
      'num_epochs',
      'max_steps',
      'warmup_steps',
      'weight_decay',
      'max_grad_norm',
    ])
      put(entry, k, num(`${A}.${k}`));
    put(entry, 'scheduler', text(`${A}.scheduler`));
    put(entry, 'optimizer', text(`${A}.optimizer`));
    const config: Record<string, unknown> = {};
    put(config, 'base_model', text('base_model'));
    put(config, 'tokenizer', text('tokenizer'));
    for (const k of ['seed', 'cutoff_len', 'save_steps']) put(config, k, num(k));
    config.adapters = [entry];
    const tasks = [...this.form.querySelectorAll<HTMLInputElement>('input[name=eval-task]:checked')].map(
      (c) => c.value,
    );
    if (tasks.length > 0) {
      const ev: Record<string, unknown> = { tasks };
      put(ev, 'every', num('eval.every'));
      put(ev, 'limit', num('eval.limit'));
      config.eval = ev;
    }
    return config;
  }

  private scheduleCheck(): void {
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.check(), 300);
  }

  private showError(field: string | null, message: string | null): void {
    for (const el of this.form.querySelectorAll('.field.invalid')) el.classList.remove('invalid');
    for (const el of this.form.querySelectorAll<HTMLElement>('.field-error')) el.textContent = '';
    this.general.hidden = true;
    if (message === null) return;
    // The field the parser names, or the nearest one above it (adapters.0.data.1 -> adapters.0.data).
    let target: Element | null = null;
    for (let parts = (field ?? '').split('.'); parts.length > 0 && field; parts.pop()) {
      target = this.form.querySelector(`.field[data-field="${CSS.escape(parts.join('.'))}"]`);
      if (target) break;
    }
    if (target) {
      target.classList.add('invalid');
      const msg = target.querySelector('.field-error');
      if (msg) msg.textContent = message;
    } else {
      this.general.textContent = field ? `${field}: ${message}` : message;
      this.general.hidden = false;
    }
  }

  /** Asks the server to check the config; true when it is valid. */
  async check(): Promise<boolean> {
    const seq = ++this.checkSeq;
    try {
      const r = await api<{ yaml: string }>('/api/config/check', {
        name: this.el$('name')?.value ?? '',
        config: this.config(),
      });
      if (seq !== this.checkSeq) return false;
      this.yaml = r.yaml;
      this.yamlBox.textContent = r.yaml;
      this.showError(null, null);
      this.startButton.disabled = false;
      this.form.dataset.valid = 'true';
      return true;
    } catch (e) {
      if (seq !== this.checkSeq) return false;
      const err = e as HttpError;
      this.showError(err.param ?? null, err.message);
      this.startButton.disabled = true;
      this.form.dataset.valid = 'false';
      return false;
    }
  }

  private toggleYaml(): void {
    this.yamlBox.hidden = !this.yamlBox.hidden;
    this.yamlBox.textContent = this.yaml || 'The config is not valid yet: see the field marked in red.';
    const b = this.form.querySelector('[data-action=yaml]');
    if (b) b.textContent = this.yamlBox.hidden ? 'Show YAML' : 'Hide YAML';
  }

  private async preview(): Promise<void> {
    const c = this.config();
    const a = (c.adapters as Record<string, unknown>[])[0]!;
    const data = (a.data as string[])[0];
    if (!data) return this.showError(`${A}.data`, 'give a data file to preview');
    clear(this.previewBox, h('p', { class: 'muted small' }, 'Tokenising…'));
    try {
      const r = await api<{ records: PreviewRecord[] }>('/api/preview', {
        base_model: c.base_model,
        tokenizer: c.tokenizer ?? null,
        data,
        prompt_template: a.prompt_template,
        train_on_inputs: a.train_on_inputs === true,
        cutoff_len: typeof c.cutoff_len === 'number' ? c.cutoff_len : 512,
        n: 3,
      });
      clear(
        this.previewBox,
        r.records.map((rec) =>
          h(
            'div',
            { class: 'record' },
            h(
              'div',
              { class: 'record-head' },
              h('span', { class: 'mono' }, rec.where),
              h('span', { class: 'muted' }, `${rec.total} tokens, ${rec.scored} scored`),
            ),
            h(
              'div',
              { class: 'tokens' },
              rec.tokens.map((t) => h('span', { class: t.scored ? 'tok scored' : 'tok prompt' }, t.text)),
            ),
          ),
        ),
      );
    } catch (e) {
      clear(this.previewBox);
      this.showError((e as HttpError).param ?? null, (e as Error).message);
    }
  }

  private async start(): Promise<void> {
    if (!(await this.check())) return;
    this.startButton.disabled = true;
    try {
      const r = await api<{ id: string }>('/api/runs', { name: this.el$('name')?.value ?? '', config: this.config() });
      location.hash = `#runs/${encodeURIComponent(r.id)}`;
    } catch (e) {
      this.showError((e as HttpError).param ?? null, (e as Error).message);
    } finally {
      this.startButton.disabled = false;
    }
  }
}
