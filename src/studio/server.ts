// `mixlora studio`: a single-page web app over the runs folder, on the HTTP stack of `mixlora serve`
// (serve/http.ts: connection limits, the API key, error bodies). The page (public/, web/) talks to /api/*:
// runs and their curves (metrics.jsonl followed), the new-run form (checked by the parser of `mixlora
// train`), training runs started, stopped and resumed in child processes, evaluations and exports (child
// processes of bin/mixlora), and chat on the serving engine in this process (/v1/*, chat.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { createHttpApp } from '../serve/http.js';
import { ApiError, badRequest } from '../serve/errors.js';
import { EventStream } from '../serve/sse.js';
import type { ConnectionLimits } from '../serve/limits.js';
import { writeFileAtomic } from '../io/atomic.js';
import { BUNDLED_TASKS } from './presets.js';
import { packageRoot, packageVersion } from '../util/package.js';
import { Confinement } from './paths.js';
import { listRunIds, readMetricsLines, summarize, type RunSummary } from './runs.js';
import { checkConfig, configYaml, FormError, previewData } from './config-form.js';
import { Jobs, type Job } from './jobs.js';
import { ChatSession, MAX_COLUMNS } from './chat.js';
import { FileFollower } from './follow.js';
import { PRESETS } from './presets.js';

export interface StudioOptions {
  runsDir: string;
  /** More folders the studio may read (models, data). */
  folders: string[];
  apiKey: string | null;
  bodyLimit: number;
  limits?: Partial<ConnectionLimits>;
  /** The address it will listen on: with a loopback one, requests must name a loopback host (no DNS rebinding). */
  host: string;
  log?: (line: string) => void;
}

export interface Studio {
  app: import('fastify').FastifyInstance;
  shutdown(): Promise<void>;
}

const COOKIE = 'mixlora_studio_key';
const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** Static files: the page, its compiled modules, and vega/vega-lite from the package's dependencies. */
function staticFiles(): Map<string, { file: string; type: string }> {
  const pub = path.join(packageRoot(), 'src', 'studio', 'public');
  const web = path.join(here, 'web');
  const files = new Map<string, { file: string; type: string }>();
  files.set('/', { file: path.join(pub, 'index.html'), type: 'text/html; charset=utf-8' });
  files.set('/static/studio.css', { file: path.join(pub, 'studio.css'), type: 'text/css; charset=utf-8' });
  files.set('/static/vendor/vega.min.js', {
    file: require.resolve('vega/build/vega.min.js'),
    type: 'text/javascript; charset=utf-8',
  });
  files.set('/static/vendor/vega-lite.min.js', {
    file: require.resolve('vega-lite/build/vega-lite.min.js'),
    type: 'text/javascript; charset=utf-8',
  });
  if (fs.existsSync(web))
    for (const f of fs.readdirSync(web))
      if (f.endsWith('.js'))
        files.set(`/static/app/${f}`, { file: path.join(web, f), type: 'text/javascript; charset=utf-8' });
  return files;
}

function cookieKey(req: FastifyRequest): string | null {
  const header = req.headers.cookie ?? '';
  for (const part of header.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) return decodeURIComponent(v.join('='));
  }
  return null;
}

const LOGIN_PAGE = (wrong: boolean) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mixlora studio</title>
<link rel="stylesheet" href="/static/studio.css"></head>
<body class="login"><form method="get" action="/"><h1>mixlora studio</h1>
<p>${wrong ? 'That key is not right.' : 'This studio needs its API key (--api-key or MIXLORA_API_KEY).'}</p>
<label>API key <input type="password" name="key" autofocus></label> <button>Open</button></form></body></html>`;

const LOOPBACK_HOSTS = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/i;

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

export async function createStudio(o: StudioOptions): Promise<Studio> {
  const log = o.log ?? (() => {});
  fs.mkdirSync(o.runsDir, { recursive: true });
  const conf = new Confinement(o.runsDir, o.folders);
  const files = staticFiles();
  const { app } = createHttpApp({
    apiKey: o.apiKey,
    bodyLimit: o.bodyLimit,
    ...(o.limits ? { limits: o.limits } : {}),
    log,
    // The cookie the page got, or the key of the login form (GET /?key=...), which the page route turns into it.
    credential: (req) => {
      const url = new URL(req.url, 'http://x');
      return (req.method === 'GET' && url.pathname === '/' ? url.searchParams.get('key') : null) ?? cookieKey(req);
    },
    publicPaths: ['/static/studio.css'],
    // A browser opening the page without the key gets a form for it.
    unauthorized: (req, given) =>
      req.method === 'GET' && new URL(req.url, 'http://x').pathname === '/'
        ? { status: 401, type: 'text/html; charset=utf-8', body: LOGIN_PAGE(given !== null) }
        : null,
  });
  const loopback = isLoopback(o.host);
  app.addHook('onRequest', async (req) => {
    // DNS rebinding: a page of another site that resolves its name to 127.0.0.1 sends its own Host.
    if (loopback && !LOOPBACK_HOSTS.test(req.headers.host ?? ''))
      throw new ApiError(403, 'requests must name this machine (localhost) as their host', 'permission_error');
    // Cross-site writes: a browser names the page's origin; it must be this studio.
    const origin = req.headers.origin;
    if (req.method !== 'GET' && req.method !== 'HEAD' && origin !== undefined) {
      let same = false;
      try {
        same = new URL(origin).host === req.headers.host;
      } catch {
        same = false;
      }
      if (!same) throw new ApiError(403, `requests from ${origin} are not accepted`, 'permission_error');
    }
  });

  const jobs = new Jobs();
  const chat = new ChatSession(conf.runs, log);
  chat.routes(app);

  // --- the page ---------------------------------------------------------------------------------------
  const sendStatic = async (req: FastifyRequest, reply: FastifyReply) => {
    const url = new URL(req.url, 'http://x');
    const f = files.get(url.pathname) ?? staticFiles().get(url.pathname);
    if (!f) throw new ApiError(404, `no file ${url.pathname}`, 'not_found_error');
    if (url.pathname === '/' && url.searchParams.has('key') && o.apiKey !== null) {
      // The key came in the address: kept in a cookie of this site, and taken out of the address.
      const key = url.searchParams.get('key')!;
      return reply
        .code(303)
        .header('set-cookie', `${COOKIE}=${encodeURIComponent(key)}; Path=/; HttpOnly; SameSite=Strict`)
        .header('location', '/')
        .send();
    }
    reply.header('cache-control', 'no-cache').type(f.type);
    return fs.createReadStream(f.file);
  };
  app.get('/', sendStatic);
  app.get('/static/*', sendStatic);

  // --- runs --------------------------------------------------------------------------------------------
  const runIds = () => {
    const ids = new Set(listRunIds(conf.runs));
    for (const j of jobs.list()) if (j.info.kind === 'train') ids.add(j.info.subject);
    return [...ids];
  };
  const jobView = (id: string) => {
    const j = jobs.trainingOf(id);
    return j ? { active: j.active, error: j.info.error, aborted: j.info.status === 'aborted' } : null;
  };
  const runDir = (id: string) => {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(id) || !runIds().includes(id))
      throw new ApiError(404, `no run '${id}'`, 'not_found_error', 'run', 'run_not_found');
    return path.join(conf.runs, id);
  };
  const show = (s: RunSummary) => ({
    ...s,
    baseModel: s.baseModel && path.isAbsolute(s.baseModel) ? conf.show(s.baseModel) : s.baseModel,
    tokenizer: s.tokenizer ? conf.show(s.tokenizer) : null,
    job: jobs.trainingOf(s.id)?.info.id ?? null,
  });

  app.get('/api/info', async () => ({
    version: packageVersion(),
    roots: conf.roots.map((r) => ({ name: r.name, writable: r.writable })),
    models: [
      ...conf.list(/\.bin$/, { depth: 3 }).filter((f) => !/tok\d*\.bin$|adapter_model\.bin$/.test(f)),
      ...conf.list(/^config\.json$/, { depth: 3 }).map((f) => f.replace(/\/config\.json$/, '')),
    ].filter((m) => !m.startsWith('runs/')),
    tokenizers: conf.list(/^(tok\d*\.bin|tokenizer\.(json|model))$/, { depth: 3 }),
    data: conf
      .list(/\.(jsonl|json)(\.gz)?$/, { depth: 3 })
      .filter(
        (f) =>
          !/\/(config|adapter_config|train_config|results|state|tokenizer|tokenizer_config|generation_config)\.json$/.test(
            f,
          ) && !f.startsWith('runs/'),
      ),
    tasks: BUNDLED_TASKS,
    presets: PRESETS,
    maxColumns: MAX_COLUMNS,
  }));

  app.get('/api/runs', async () =>
    runIds()
      .map((id) => show(summarize(conf.runs, id, jobView(id))))
      .sort((a, b) => b.updated - a.updated),
  );

  app.get('/api/runs/:id', async (req) => {
    const { id } = req.params as { id: string };
    const dir = runDir(id);
    const yamlFile = path.join(conf.runs, `${id}.yaml`);
    let evalReport: unknown = null;
    try {
      evalReport = JSON.parse(fs.readFileSync(path.join(dir, 'eval', 'results.json'), 'utf8'));
    } catch {
      evalReport = null;
    }
    let config: unknown = null;
    try {
      config = JSON.parse(fs.readFileSync(path.join(dir, 'train_config.json'), 'utf8'));
    } catch {
      config = null;
    }
    return {
      ...show(summarize(conf.runs, id, jobView(id))),
      yaml: fs.existsSync(yamlFile) ? fs.readFileSync(yamlFile, 'utf8') : null,
      config: config === null ? null : showPaths(conf, config),
      eval: evalReport,
    };
  });

  app.get('/api/runs/:id/metrics', async (req) => {
    const { id } = req.params as { id: string };
    return readMetricsLines(path.join(runDir(id), 'metrics.jsonl'));
  });

  // Curves, live: one stream for every run the page shows (a browser holds few connections per site).
  app.get('/api/follow', async (req, reply) => {
    const q = req.query as { runs?: string };
    const ids = (q.runs ?? '').split(',').filter(Boolean).slice(0, 16);
    const followers = ids.map((id) => ({ id, f: new FileFollower(path.join(runDir(id), 'metrics.jsonl')) }));
    const stream = new EventStream(reply);
    let beat = 0;
    const tick = () => {
      if (stream.closed) return stop();
      for (const { id, f } of followers) {
        const u = f.poll();
        if (u) stream.send({ type: 'metrics', run: id, reset: u.reset, lines: u.lines });
      }
      if (++beat % 30 === 0) stream.send({ type: 'ping' });
    };
    const timer = setInterval(tick, 500);
    const stop = () => clearInterval(timer);
    reply.raw.on('close', stop);
    tick();
    return reply;
  });

  // --- the new-run form ---------------------------------------------------------------------------------
  const formError = (e: unknown): never => {
    if (e instanceof FormError) throw badRequest(e.message, e.field, 'invalid_config');
    throw e;
  };
  const bodyObject = { body: { type: 'object' } } as const;
  app.post('/api/config/check', { schema: bodyObject }, async (req) => {
    const b = req.body as { name?: unknown; config?: unknown };
    try {
      const checked = checkConfig(conf, b.name, b.config);
      return { ok: true, yaml: configYaml(conf, checked.value, String(b.name)) };
    } catch (e) {
      return formError(e);
    }
  });

  app.post('/api/preview', { schema: bodyObject }, async (req) => {
    try {
      return { records: previewData(conf, req.body as Parameters<typeof previewData>[1]) };
    } catch (e) {
      if (e instanceof FormError) return formError(e);
      throw badRequest((e as Error).message, 'adapters.0.data', 'invalid_data');
    }
  });

  app.post('/api/runs', { schema: bodyObject }, async (req, reply) => {
    const b = req.body as { name?: unknown; config?: unknown };
    let checked;
    try {
      checked = checkConfig(conf, b.name, b.config);
    } catch (e) {
      return formError(e);
    }
    const name = String(b.name);
    writeFileAtomic(checked.file, configYaml(conf, checked.value, name));
    const job = jobs.train(name, checked.file, false);
    log(`run ${name}: started (job ${job.info.id})`);
    reply.code(201);
    return { id: name, job: job.info.id };
  });

  app.post('/api/runs/:id/stop', async (req) => {
    const { id } = req.params as { id: string };
    runDir(id);
    const job = jobs.trainingOf(id);
    if (!job?.active)
      throw new ApiError(
        409,
        `run '${id}' is not running in this studio`,
        'invalid_request_error',
        null,
        'not_running',
      );
    job.stop();
    return { id, job: job.info.id, stopping: true };
  });

  app.post('/api/runs/:id/resume', async (req, reply) => {
    const { id } = req.params as { id: string };
    const dir = runDir(id);
    if (jobs.trainingOf(id)?.active)
      throw new ApiError(409, `run '${id}' is running`, 'invalid_request_error', null, 'running');
    const file = path.join(conf.runs, `${id}.yaml`);
    if (!fs.existsSync(file))
      throw badRequest(
        `run '${id}' has no config beside it (runs/${id}.yaml): resume it with mixlora train CONFIG --resume`,
      );
    const s = summarize(conf.runs, id, jobView(id));
    if (s.state === 'running') throw new ApiError(409, `run '${id}' is running`, 'invalid_request_error');
    if (s.state === 'finished') throw badRequest(`run '${id}' has finished`);
    void dir;
    const job = jobs.train(id, file, true);
    reply.code(201);
    return { id, job: job.info.id };
  });

  // --- jobs ---------------------------------------------------------------------------------------------
  const jobOut = (j: Job, since = 0) => {
    const first = j.info.dropped;
    const from = Math.max(0, since - first);
    return { ...j.info, log: j.info.log.slice(from), next: first + j.info.log.length, result: j.info.result };
  };
  app.get('/api/jobs', async () => jobs.list().map((j) => ({ ...jobOut(j), log: undefined, result: undefined })));
  app.get('/api/jobs/:id', async (req) => {
    const { id } = req.params as { id: string };
    const job = jobs.get(Number(id));
    if (!job) throw new ApiError(404, `no job ${id}`, 'not_found_error');
    const since = Number((req.query as { since?: string }).since ?? 0);
    return jobOut(job, Number.isSafeInteger(since) ? since : 0);
  });
  app.post('/api/jobs/:id/stop', async (req) => {
    const { id } = req.params as { id: string };
    const job = jobs.get(Number(id));
    if (!job) throw new ApiError(404, `no job ${id}`, 'not_found_error');
    job.stop();
    return { id: job.info.id, stopping: job.active };
  });

  /** An adapter folder named by the page (`run/adapter`, `run/best/adapter`), its run and the run's model. */
  const adapterOf = (p: unknown) => {
    if (typeof p !== 'string') throw badRequest('adapters must be folders of runs (run/adapter)', 'adapters');
    const parts = p.split('/');
    const run = parts[0]!;
    const dir = conf.resolve(path.join(runDir(run), ...parts.slice(1)));
    const s = summarize(conf.runs, run, jobView(run));
    const a = s.adapters.find((x) => x.path === p);
    if (!dir || !a) throw new ApiError(404, `no adapter '${p}'`, 'not_found_error', 'adapters', 'adapter_not_found');
    return { dir, run, summary: s, adapter: a };
  };

  /** The base model and tokenizer a run trained on, when they are inside the studio's folders (or a Hub id). */
  const runModel = (s: RunSummary) => {
    if (!s.baseModel) throw badRequest(`run '${s.id}' names no base model yet`, 'run');
    const outside = (p: string) =>
      badRequest(
        `run '${s.id}' was trained on ${path.basename(p)}, outside the folders this studio may read (start it with --folder naming that model's folder)`,
        'run',
        'outside_folders',
      );
    const model = path.isAbsolute(s.baseModel) ? conf.resolve(s.baseModel) : s.baseModel;
    if (model === null) throw outside(s.baseModel);
    const tokenizer = s.tokenizer === null ? null : conf.resolve(s.tokenizer);
    if (s.tokenizer !== null && tokenizer === null) throw outside(s.tokenizer);
    return { model, tokenizer };
  };

  // --- evaluate -----------------------------------------------------------------------------------------
  app.post('/api/evaluate', { schema: bodyObject }, async (req, reply) => {
    const b = req.body as {
      adapters?: unknown;
      base?: unknown;
      tasks?: unknown;
      data?: unknown;
      limit?: unknown;
      scoring?: unknown;
    };
    const list = Array.isArray(b.adapters) ? b.adapters : [];
    if (list.length === 0 && b.base !== true)
      throw badRequest('choose at least one adapter (or the base model)', 'adapters');
    if (list.length > 8) throw badRequest('at most 8 adapters at once', 'adapters');
    const adapters = list.map(adapterOf);
    const models = new Set(adapters.map((a) => `${a.summary.baseModel}\u0000${a.summary.tokenizer}`));
    if (models.size > 1) throw badRequest('these adapters were trained on different base models', 'adapters');
    const first = adapters[0]?.summary;
    if (!first) throw badRequest('choose an adapter: its run names the base model', 'adapters');
    const base = runModel(first);
    const tasks = Array.isArray(b.tasks) ? b.tasks.map(String) : [];
    if (tasks.length === 0) throw badRequest('choose at least one task', 'tasks');
    const args = ['eval', '--json', '--model', base.model];
    if (base.tokenizer) args.push('--tokenizer', base.tokenizer);
    if (b.base === true) args.push('--adapter', 'none');
    for (const a of adapters) args.push('--adapter', a.dir);
    const data = typeof b.data === 'string' && b.data ? conf.fromShown(b.data) : null;
    if (typeof b.data === 'string' && b.data && data === null) throw badRequest(`'${b.data}' was not found`, 'data');
    for (const t of tasks) {
      if (data === null && !BUNDLED_TASKS.includes(t))
        throw badRequest(`'${t}' is not a bundled task: give its data file`, 'tasks');
      args.push('--task', t);
    }
    if (data !== null) {
      if (tasks.length !== 1) throw badRequest('a data file goes with exactly one task name', 'tasks');
      args.push('--data', data);
    }
    if (b.limit !== undefined && b.limit !== null && b.limit !== '') {
      if (!Number.isSafeInteger(b.limit) || (b.limit as number) < 1)
        throw badRequest('limit must be an integer >= 1', 'limit');
      args.push('--limit', String(b.limit));
    }
    if (b.scoring !== undefined) {
      if (b.scoring !== 'choice' && b.scoring !== 'loglik') throw badRequest('scoring is choice or loglik', 'scoring');
      args.push('--scoring', b.scoring);
    }
    // Results are kept with each run evaluated (its eval/ folder: results.json, results.md, pictures).
    const runsOf = [...new Set(adapters.map((a) => a.run))];
    args.push('--out', path.join(conf.runs, runsOf[0]!, 'eval'));
    const job = jobs.cli('eval', runsOf.join(', '), args, { json: true });
    void job.done.then(() => {
      if (job.info.status !== 'completed') return;
      for (const run of runsOf.slice(1)) {
        const out = path.join(conf.runs, run, 'eval');
        fs.mkdirSync(out, { recursive: true });
        writeFileAtomic(path.join(out, 'results.json'), JSON.stringify(job.info.result, null, 2) + '\n');
      }
    });
    reply.code(201);
    return { job: job.info.id };
  });

  // --- export -------------------------------------------------------------------------------------------
  app.post('/api/export', { schema: bodyObject }, async (req, reply) => {
    const b = req.body as { adapter?: unknown; format?: unknown };
    const a = adapterOf(b.adapter);
    const format = b.format;
    if (format !== 'merged' && format !== 'bin') throw badRequest('format is merged or bin', 'format');
    if (format === 'merged' && a.adapter.kind.startsWith('Mix'))
      throw badRequest(
        'a MixLoRA adapter cannot be merged (its experts are chosen per token): export it as .bin',
        'format',
      );
    const name = `${a.adapter.path.replaceAll('/', '-')}-${format}`;
    const out = path.join(conf.runs, 'exports', name);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    const base = format === 'merged' ? runModel(a.summary) : null;
    const args =
      base !== null
        ? [
            'merge',
            '--model',
            base.model,
            ...(base.tokenizer ? ['--tokenizer', base.tokenizer] : []),
            '--adapter',
            a.dir,
            '--out',
            out,
            '--force',
          ]
        : ['convert', '--adapter', a.dir, '--format', 'bin', '--out', out, '--force'];
    const job = jobs.cli('export', a.adapter.path, args);
    void job.done.then(() => {
      if (job.info.status === 'completed') job.info.result = { folder: conf.show(out), files: fs.readdirSync(out) };
    });
    reply.code(201);
    return { job: job.info.id, folder: conf.show(out) };
  });

  // --- chat ---------------------------------------------------------------------------------------------
  app.get('/api/chat', async () => chat.state());
  app.post('/api/chat/model', { schema: bodyObject }, async (req) => {
    const b = req.body as { run?: unknown; model?: unknown; tokenizer?: unknown };
    let model: string;
    let tokenizer: string | null;
    if (typeof b.run === 'string') {
      runDir(b.run);
      ({ model, tokenizer } = runModel(summarize(conf.runs, b.run, jobView(b.run))));
    } else if (typeof b.model === 'string') {
      model = conf.fromShown(b.model) ?? '';
      if (!model) throw badRequest(`'${b.model}' was not found in the folders this studio may read`, 'model');
      tokenizer = typeof b.tokenizer === 'string' && b.tokenizer ? conf.fromShown(b.tokenizer) : null;
      if (typeof b.tokenizer === 'string' && b.tokenizer && tokenizer === null)
        throw badRequest(`'${b.tokenizer}' was not found`, 'tokenizer');
    } else throw badRequest('give run or model', 'model');
    try {
      return await chat.use({ model, tokenizer }, path.isAbsolute(model) ? conf.show(model) : model);
    } catch (e) {
      if (e instanceof ApiError) throw e;
      throw badRequest((e as Error).message, 'model', 'model_not_loaded');
    }
  });
  app.post('/api/chat/adapters', { schema: bodyObject }, async (req) => {
    const b = req.body as { adapters?: unknown };
    const list = Array.isArray(b.adapters) ? b.adapters : [];
    for (const p of list) adapterOf(p);
    return chat.setAdapters(list as string[]);
  });

  return {
    app,
    async shutdown() {
      await jobs.stopAll();
      await chat.close();
      await app.close();
    },
  };
}

/** train_config.json with its paths shown as the studio names them. */
function showPaths(conf: Confinement, config: unknown): unknown {
  return JSON.parse(JSON.stringify(config), (_k, v: unknown) =>
    typeof v === 'string' && path.isAbsolute(v) && v.startsWith(path.sep) && !v.startsWith(os.tmpdir() + path.sep)
      ? conf.show(v)
      : v,
  );
}
