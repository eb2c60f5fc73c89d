// The Chat screen: the base model and up to four adapters side by side. One prompt (or one conversation,
// when the tokenizer has a chat template) goes to each; the answers stream into columns from the serving
// engine in the studio's process (the OpenAI routes /v1/completions and /v1/chat/completions), with the
// sampling settings shared.
import { api, clear, h, HttpError, postStream } from './dom.js';
import type { ChatState, Info, Run } from './types.js';

interface Column {
  model: string;
  label: string;
  kind: string;
  history: { role: string; content: string }[];
  body: HTMLElement;
}

export class ChatView {
  readonly el = h('div', { class: 'chat-layout' });
  private readonly controls = h('div', { class: 'card chat-controls' });
  private readonly columnsEl = h('div', { class: 'chat-columns' });
  private readonly promptBox = h('textarea', {
    rows: 3,
    id: 'chat-prompt',
    placeholder: 'Once upon a time',
    spellcheck: true,
  });
  private readonly status = h('p', { class: 'muted small', 'data-chat-status': '' });
  private state: ChatState | null = null;
  private runs: Run[] = [];
  private columns: Column[] = [];
  private controller: AbortController | null = null;

  constructor(private readonly info: Info) {
    const form = h(
      'form',
      { class: 'card chat-input' },
      this.promptBox,
      h(
        'div',
        { class: 'form-actions' },
        h(
          'button',
          { type: 'button', class: 'button', 'data-action': 'clear', onclick: () => this.clearColumns() },
          'Clear',
        ),
        h('button', { type: 'submit', class: 'primary', 'data-action': 'send' }, 'Send'),
      ),
    );
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.send();
    });
    this.promptBox.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        void this.send();
      }
    });
    this.el.append(this.controls, this.columnsEl, form);
  }

  async show(runId: string | null): Promise<void> {
    this.runs = (await api<Run[]>('/api/runs')).filter((r) => r.baseModel);
    this.state = await api<ChatState | null>('/api/chat');
    const run = this.runs.find((r) => r.id === runId);
    if (run && this.state?.model !== run.baseModel)
      await this.load(
        run.id,
        run.adapters
          .filter((a) => !a.best)
          .slice(0, 2)
          .map((a) => a.path),
      );
    else if (run && this.state)
      await this.setAdapters(
        [
          ...new Set([
            ...Object.values(this.state.adapters),
            ...run.adapters.filter((a) => !a.best).map((a) => a.path),
          ]),
        ].slice(0, this.info.maxColumns),
      );
    this.render();
  }

  private async load(runId: string, adapters: string[]): Promise<void> {
    this.status.textContent = 'Loading the model…';
    try {
      this.state = await api<ChatState>('/api/chat/model', { run: runId });
      if (adapters.length) await this.setAdapters(adapters);
      this.status.textContent = '';
    } catch (e) {
      this.status.textContent = (e as Error).message;
    }
  }

  private async setAdapters(paths: string[]): Promise<void> {
    try {
      this.state = await api<ChatState>('/api/chat/adapters', { adapters: paths });
      this.status.textContent = '';
    } catch (e) {
      this.status.textContent = (e as HttpError).message;
    }
  }

  private render(): void {
    const bases = [...new Map(this.runs.map((r) => [r.baseModel!, r.id])).entries()];
    const baseSelect = h(
      'select',
      { id: 'chat-base' },
      bases.map(([model, run]) => h('option', { value: run, selected: this.state?.model === model }, model)),
    );
    const loadButton = h(
      'button',
      {
        type: 'button',
        class: 'button',
        'data-action': 'load',
        // load() shows its own errors in the status line.
        onclick: () => void this.load(baseSelect.value, []).then(() => this.render()),
      },
      this.state ? 'Switch' : 'Load',
    );
    const loaded = new Set(Object.values(this.state?.adapters ?? {}));
    const compatible = this.state ? this.runs.filter((r) => r.baseModel === this.state!.model) : [];
    const adapterChecks = h(
      'div',
      { class: 'checks column' },
      compatible.flatMap((r) =>
        r.adapters.map((a) =>
          h(
            'label',
            {},
            h('input', {
              type: 'checkbox',
              name: 'chat-adapter',
              value: a.path,
              checked: loaded.has(a.path),
              onchange: (e: Event) => {
                const box = e.target as HTMLInputElement;
                const chosen = [
                  ...this.controls.querySelectorAll<HTMLInputElement>('input[name=chat-adapter]:checked'),
                ].map((c) => c.value);
                if (chosen.length > this.info.maxColumns) {
                  box.checked = false;
                  this.status.textContent = `At most ${this.info.maxColumns} adapters side by side.`;
                  return;
                }
                // setAdapters() shows its own errors in the status line.
                void this.setAdapters(chosen).then(() => this.render());
              },
            }),
            h('span', { class: 'mono' }, a.path),
            h('span', { class: 'muted' }, ` ${a.kind}`),
          ),
        ),
      ),
    );
    const num = (id: string, label: string, value: string) =>
      h(
        'div',
        { class: 'field' },
        h('label', { for: id }, label),
        h('input', { id, class: 'num', value, inputmode: 'decimal' }),
      );
    const keep = (id: string, fallback: string) =>
      (document.getElementById(id) as HTMLInputElement | null)?.value ?? fallback;
    clear(
      this.controls,
      h('h2', {}, 'Chat and compare'),
      bases.length === 0
        ? h('p', { class: 'muted' }, 'No run yet: train an adapter first (New run).')
        : h(
            'div',
            { class: 'row' },
            h('div', { class: 'field' }, h('label', { for: 'chat-base' }, 'Base model'), baseSelect),
            loadButton,
          ),
      this.state
        ? [
            h(
              'p',
              { class: 'muted small' },
              `${this.state.name}: context ${this.state.context} tokens; `,
              this.state.chatTemplate ? 'chat template: conversations.' : 'no chat template: each prompt is completed.',
            ),
            h(
              'div',
              { class: 'field' },
              h('label', {}, 'Show base model'),
              h(
                'label',
                { class: 'check' },
                h('input', {
                  type: 'checkbox',
                  id: 'chat-show-base',
                  checked: (document.getElementById('chat-show-base') as HTMLInputElement | null)?.checked ?? true,
                  onchange: () => this.renderColumns(),
                }),
                ' base',
              ),
            ),
            h('div', { class: 'field' }, h('label', {}, `Adapters (up to ${this.info.maxColumns})`), adapterChecks),
            h(
              'div',
              { class: 'row' },
              num('chat-max', 'Max tokens', keep('chat-max', '64')),
              num('chat-temp', 'Temperature', keep('chat-temp', '0')),
              num('chat-top-p', 'Top-p', keep('chat-top-p', '1')),
              num('chat-seed', 'Seed', keep('chat-seed', '1')),
            ),
          ]
        : null,
      this.status,
    );
    this.renderColumns();
  }

  private renderColumns(): void {
    const s = this.state;
    const models: { model: string; label: string; kind: string }[] = [];
    if (s) {
      if ((document.getElementById('chat-show-base') as HTMLInputElement | null)?.checked ?? true)
        models.push({ model: s.name, label: `${s.name} (base)`, kind: 'base model' });
      for (const [name, folder] of Object.entries(s.adapters)) {
        const kind = this.runs.flatMap((r) => r.adapters).find((a) => a.path === folder)?.kind ?? 'adapter';
        models.push({ model: name, label: folder, kind });
      }
    }
    const old = new Map(this.columns.map((c) => [c.model, c]));
    this.columns = models.map((m) => {
      const prev = old.get(m.model);
      return prev ?? { ...m, history: [], body: h('div', { class: 'column-body', 'data-model': m.model }) };
    });
    clear(
      this.columnsEl,
      this.columns.length === 0
        ? h('p', { class: 'muted' }, s ? 'Choose adapters to compare.' : 'Load a base model to chat.')
        : null,
      this.columns.map((c) =>
        h(
          'div',
          { class: 'card column' },
          h('div', { class: 'column-head' }, h('strong', {}, c.label), h('span', { class: 'muted' }, c.kind)),
          c.body,
        ),
      ),
    );
    this.columnsEl.style.setProperty('--columns', String(Math.max(1, this.columns.length)));
  }

  private clearColumns(): void {
    this.controller?.abort();
    for (const c of this.columns) {
      c.history = [];
      clear(c.body);
    }
  }

  private async send(): Promise<void> {
    const prompt = this.promptBox.value;
    if (!this.state || prompt.trim() === '' || this.columns.length === 0) return;
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const value = (id: string) => Number((document.getElementById(id) as HTMLInputElement).value);
    const sampling: Record<string, number> = {
      max_tokens: value('chat-max'),
      temperature: value('chat-temp'),
      top_p: value('chat-top-p'),
    };
    const seed = value('chat-seed');
    if (Number.isSafeInteger(seed)) sampling.seed = seed;
    const chatMode = this.state.chatTemplate;
    this.status.textContent = '';
    await Promise.all(
      this.columns.map(async (c) => {
        if (!chatMode) {
          c.history = [];
          clear(c.body);
        }
        c.body.append(h('div', { class: 'msg user' }, prompt));
        const answer = h('div', { class: 'msg assistant streaming', 'data-answer': '' });
        c.body.append(answer);
        let text = '';
        try {
          const url = chatMode ? '/v1/chat/completions' : '/v1/completions';
          const messages = [...c.history, { role: 'user', content: prompt }];
          const body = chatMode
            ? { model: c.model, messages, stream: true, ...sampling }
            : { model: c.model, prompt, stream: true, ...sampling };
          for await (const chunk of postStream(url, body, controller.signal)) {
            const choice = (chunk as { choices?: { text?: string; delta?: { content?: string } }[] }).choices?.[0];
            const piece = chatMode ? (choice?.delta?.content ?? '') : (choice?.text ?? '');
            text += piece;
            answer.textContent = text;
            c.body.scrollTop = c.body.scrollHeight;
          }
          if (chatMode) c.history = [...messages, { role: 'assistant', content: text }];
        } catch (e) {
          if (!controller.signal.aborted) answer.append(h('span', { class: 'error' }, ` ${(e as Error).message}`));
        } finally {
          answer.classList.remove('streaming');
          answer.dataset.done = 'true';
        }
      }),
    );
  }
}
