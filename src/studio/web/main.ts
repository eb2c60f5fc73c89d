// The studio's page: a tab bar and one screen at a time, chosen by the address's hash (#runs/<id>, #new,
// #eval/<run>, #chat/<run>, #export), so that every screen can be linked and reloaded.
import { api, clear, h } from './dom.js';
import { RunsView } from './runs.js';
import { NewRunView } from './newrun.js';
import { EvaluateView } from './evaluate.js';
import { ChatView } from './chat.js';
import { ExportView } from './export.js';
import type { Info } from './types.js';

const TABS: [string, string][] = [
  ['runs', 'Runs'],
  ['new', 'New run'],
  ['eval', 'Evaluate'],
  ['chat', 'Chat'],
  ['export', 'Export'],
];

async function main(): Promise<void> {
  const info = await api<Info>('/api/info');
  const nav = h(
    'nav',
    { class: 'tabs' },
    TABS.map(([id, label]) => h('a', { href: `#${id}`, 'data-tab': id }, label)),
  );
  const header = h(
    'header',
    { class: 'top' },
    h('div', { class: 'brand' }, h('span', { class: 'logo' }, 'mixlora'), h('span', { class: 'product' }, 'studio')),
    nav,
    h('span', { class: 'version muted' }, `v${info.version}`),
  );
  const main = h('main', { id: 'screen' });
  document.body.replaceChildren(header, main);
  const runs = new RunsView();
  const newRun = new NewRunView(info);
  const evaluate = new EvaluateView(info);
  const chat = new ChatView(info);
  const exporter = new ExportView();

  const route = async () => {
    const [tab = 'runs', arg] = decodeURIComponent(location.hash.replace(/^#/, '')).split('/');
    const current = TABS.some(([id]) => id === tab) ? tab : 'runs';
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.tab === current);
    if (current !== 'runs') runs.hide();
    document.body.dataset.screen = current;
    try {
      if (current === 'runs') {
        clear(main, runs.el);
        await runs.show(arg ?? null);
      } else if (current === 'new') {
        clear(main, newRun.el);
        await newRun.show();
      } else if (current === 'eval') {
        clear(main, evaluate.el);
        await evaluate.show(arg ?? null);
      } else if (current === 'chat') {
        clear(main, chat.el);
        await chat.show(arg ?? null);
      } else {
        clear(main, exporter.el);
        await exporter.show();
      }
    } catch (e) {
      main.append(h('p', { class: 'error' }, (e as Error).message));
    }
    document.body.dataset.ready = current;
  };
  window.addEventListener('hashchange', () => void route());
  await route();
}

void main();
