// Model ids (org/name[@revision]) resolved through the Hugging Face cache layout, offline; downloads
// from a Hub served on 127.0.0.1 (HF_ENDPOINT) into that layout; the errors when neither works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { writeConfig } from '../helpers/train.js';
import { convertLlama2c } from '../../src/models/convert.js';
import { findCached, hubCacheDir, isModelId, parseModelId, resolveModel } from '../../src/models/hub.js';
import { readTrainConfig } from '../../src/train/config.js';
import { train } from '../../src/train/trainer.js';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';
const OTHER = 'fedcba9876543210fedcba9876543210fedcba98';
let hfFolder = '';

before(() => {
  hfFolder = path.join(tempDir(), 'stories-hf');
  convertLlama2c(STORIES_BIN, STORIES_TOK, hfFolder);
});

/** A cache folder holding the model as huggingface_hub lays it out: refs/main -> snapshots/<commit>. */
function buildCache(cache: string, repo: string): string {
  const folder = path.join(cache, `models--${repo.replace('/', '--')}`);
  const snap = path.join(folder, 'snapshots', COMMIT);
  fs.mkdirSync(snap, { recursive: true });
  fs.mkdirSync(path.join(folder, 'refs'), { recursive: true });
  fs.writeFileSync(path.join(folder, 'refs', 'main'), COMMIT);
  fs.writeFileSync(path.join(folder, 'refs', 'v1'), COMMIT + '\n');
  for (const f of fs.readdirSync(hfFolder)) fs.copyFileSync(path.join(hfFolder, f), path.join(snap, f));
  return snap;
}

test('model ids are told apart from paths', () => {
  assert.ok(isModelId('meta-llama/Llama-2-7b-hf'));
  assert.ok(isModelId('org/name@v1.0'));
  assert.deepEqual(parseModelId('org/name@refs/pr/1'), { repo: 'org/name', revision: 'refs/pr/1' });
  assert.deepEqual(parseModelId('org/name'), { repo: 'org/name', revision: 'main' });
  for (const p of ['/abs/path', './rel/x', 'a/b/c', '../x/y', 'model.bin', 'org/..']) assert.ok(!isModelId(p), p);
});

test('the cache folder: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub', () => {
  assert.equal(hubCacheDir({ HF_HUB_CACHE: '/c', HF_HOME: '/h' }), '/c');
  assert.equal(hubCacheDir({ HF_HOME: '/h' }), path.join('/h', 'hub'));
  assert.match(hubCacheDir({}), /\.cache\/huggingface\/hub$/);
});

test('an id resolves to its cached snapshot (branch, tag or commit), offline; the CLI and configs accept it', async () => {
  const home = tempDir();
  const snap = buildCache(path.join(home, 'hub'), 'stories/stories260K');
  const env = { HF_HOME: home, HF_HUB_OFFLINE: '1' };
  assert.equal(await resolveModel('stories/stories260K', { env }), snap);
  assert.equal(await resolveModel('stories/stories260K@v1', { env }), snap);
  assert.equal(await resolveModel(`stories/stories260K@${COMMIT}`, { env }), snap);
  assert.equal(findCached(parseModelId('stories/stories260K@v2'), path.join(home, 'hub')), null);
  await assert.rejects(resolveModel(`stories/stories260K@${OTHER}`, { env }), /not in the Hugging Face cache/);
  const r = mixlora(
    ['generate', '--model', 'stories/stories260K@v1', '--prompt', 'Once upon a time', '--max-new-tokens', '8'],
    {
      env,
    },
  );
  assert.equal(r.code, 0, r.stderr);
  const local = mixlora(['generate', '--model', hfFolder, '--prompt', 'Once upon a time', '--max-new-tokens', '8']);
  assert.equal(r.stdout, local.stdout);
  // base_model: an id in a training config is kept as written (it names the model in adapter_config.json).
  const { file } = writeConfig({
    base_model: 'stories/stories260K',
    tokenizer: null,
    adapters: [
      {
        name: 'a',
        data: file0(),
        max_steps: 1,
        adapter: { peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] },
      },
    ],
  });
  const cfg = readTrainConfig(file);
  assert.equal(cfg.baseModel, 'stories/stories260K');
  const saved = { HF_HOME: process.env.HF_HOME, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE };
  Object.assign(process.env, env);
  try {
    const r = await train(cfg);
    const written = JSON.parse(fs.readFileSync(path.join(r.outputs.a!, 'adapter_config.json'), 'utf8'));
    assert.equal(written.base_model_name_or_path, 'stories/stories260K');
  } finally {
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  }
});

function file0(): string {
  const f = path.join(tempDir(), 'd.jsonl');
  fs.writeFileSync(f, JSON.stringify({ instruction: 'Say hi', output: 'hi' }) + '\n');
  return f;
}

test('an id not cached, offline: one error naming the id and the cache folder', async () => {
  const cache = tempDir();
  const r = mixlora(['generate', '--model', 'nobody/missing-model', '--prompt', 'x'], {
    env: { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' },
  });
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /nobody\/missing-model/);
  assert.ok(lines[0]!.includes(path.join(cache, 'models--nobody--missing-model')), lines[0]);
  assert.match(lines[0]!, /HF_HUB_OFFLINE/);
});

// ---- a Hub on 127.0.0.1 -------------------------------------------------------------------------

let server: http.Server;
const oid = (f: string) => crypto.createHash('sha1').update(f).digest('hex');
let hubUrl = '';
const requests: { method: string; url: string; auth: string | undefined }[] = [];

before(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    requests.push({ method: req.method!, url: url.pathname, auth: req.headers.authorization });
    const repo = 'stories/tiny';
    if (url.pathname === `/api/models/${repo}/revision/main`) {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ _id: 'x', id: repo, sha: OTHER, private: false }));
      return;
    }
    if (url.pathname === `/api/models/${repo}/tree/${OTHER}`) {
      const files = [...fs.readdirSync(hfFolder), 'pytorch_model.bin'];
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify(
          files.map((f) => ({
            type: 'file',
            path: f,
            size: f.endsWith('.bin') ? 1 : fs.statSync(path.join(hfFolder, f)).size,
            oid: oid(f),
          })),
        ),
      );
      return;
    }
    if (req.method === 'POST' && url.pathname === `/api/models/${repo}/paths-info/${OTHER}`) {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const { paths } = JSON.parse(body) as { paths: string[] };
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(paths.map((p) => ({ type: 'file', path: p, size: 0, oid: oid(p) }))));
      });
      return;
    }
    const m = new RegExp(`^/${repo}/resolve/${OTHER}/(.+)$`).exec(url.pathname);
    if (m && fs.existsSync(path.join(hfFolder, m[1]!))) {
      const body = fs.readFileSync(path.join(hfFolder, m[1]!));
      res.setHeader('ETag', `"${m[1]!}-etag"`);
      res.setHeader('X-Repo-Commit', OTHER);
      const range = req.headers.range ? /bytes=(\d+)-(\d+)/.exec(req.headers.range) : null;
      if (range) {
        const [from, to] = [Number(range[1]), Number(range[2])];
        res.statusCode = 206;
        res.setHeader('Content-Range', `bytes ${from}-${to}/${body.length}`);
        res.end(body.subarray(from, to + 1));
      } else {
        res.setHeader('Content-Length', body.length);
        res.end(body);
      }
      return;
    }
    res.statusCode = 404;
    res.setHeader('X-Error-Code', 'EntryNotFound');
    res.end('{"error":"not found"}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hubUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => server.close());

test('an id not cached is downloaded (HF_ENDPOINT, HF_TOKEN) into the cache layout, with progress; then found offline', async () => {
  const cache = tempDir();
  const seen: number[] = [];
  let total = 0;
  const env = { HF_HUB_CACHE: cache, HF_ENDPOINT: hubUrl, HF_TOKEN: 'hf_test_token' };
  const snap = await resolveModel('stories/tiny', {
    env,
    progress: { start: (t) => (total = t), update: (b) => seen.push(b), stop: () => {} },
  });
  assert.equal(snap, path.join(cache, 'models--stories--tiny', 'snapshots', OTHER));
  assert.equal(fs.readFileSync(path.join(cache, 'models--stories--tiny', 'refs', 'main'), 'utf8'), OTHER);
  // The files mixlora reads, byte for byte; the .bin duplicate is not fetched.
  for (const f of fs.readdirSync(hfFolder))
    assert.deepEqual(fs.readFileSync(path.join(snap, f)), fs.readFileSync(path.join(hfFolder, f)), f);
  assert.ok(!fs.existsSync(path.join(snap, 'pytorch_model.bin')));
  assert.ok(!requests.some((r) => r.url.endsWith('pytorch_model.bin')));
  const sizes = fs.readdirSync(hfFolder).reduce((n, f) => n + fs.statSync(path.join(hfFolder, f)).size, 0);
  assert.equal(total, sizes);
  assert.equal(seen[seen.length - 1], sizes);
  assert.ok(requests.every((r) => r.auth === 'Bearer hf_test_token'));
  // Offline now: the same id comes from the cache without a request.
  const before = requests.length;
  assert.equal(await resolveModel('stories/tiny', { env: { ...env, HF_HUB_OFFLINE: '1' } }), snap);
  assert.equal(requests.length, before);
  // A repository the Hub does not have: one error with the id, the cache folder and the Hub's answer.
  await assert.rejects(
    resolveModel('stories/absent', { env }),
    (e: Error) =>
      e.message.includes('stories/absent') && e.message.includes(path.join(cache, 'models--stories--absent')),
  );
});
