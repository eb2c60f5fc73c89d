// `mixlora studio` over HTTP, without a browser: the API key (header, cookie, the login page), requests that
// name another host (DNS rebinding) or come from another site, paths confined to --runs and --folder, the
// new-run form's errors at their fields, and the static files the page needs (vega from the package).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { createStudio, type Studio } from '../../src/studio/server.js';
import { tempDir } from '../helpers/fixtures.js';

const KEY = 'studio-test-key';

async function start(apiKey: string | null): Promise<{ studio: Studio; url: string; dir: string }> {
  const dir = tempDir('mixlora-studio-api-');
  fs.mkdirSync(path.join(dir, 'data'));
  fs.writeFileSync(path.join(dir, 'data', 'd.jsonl'), '{"prompt": "Once", "completion": " upon a time"}\n');
  const studio = await createStudio({
    runsDir: path.join(dir, 'runs'),
    folders: [path.join(dir, 'data')],
    apiKey,
    bodyLimit: 1 << 20,
    host: '127.0.0.1',
  });
  const url = await studio.app.listen({ host: '127.0.0.1', port: 0 });
  return { studio, url, dir };
}

const config = (over: Record<string, unknown> = {}, adapter: Record<string, unknown> = {}) => ({
  base_model: 'bundled/models/stories260K/stories260K.bin',
  tokenizer: 'bundled/models/stories260K/tok512.bin',
  adapters: [
    {
      name: 'lora',
      adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj'] },
      data: ['data/d.jsonl'],
      ...adapter,
    },
  ],
  ...over,
});

async function check(url: string, name: string, cfg: unknown) {
  const res = await fetch(`${url}/api/config/check`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name, config: cfg }),
  });
  return {
    status: res.status,
    body: (await res.json()) as { yaml?: string; error?: { message: string; param: string } },
  };
}

test('the new-run form is checked by the train parser, errors named by field; paths stay in the folders', async () => {
  const { studio, url, dir } = await start(null);
  try {
    const ok = await check(url, 'r1', config());
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.match(ok.body.yaml!, /output_dir: r1/);
    assert.match(ok.body.yaml!, /peft_type: LORA/);
    const cases: [unknown, string, RegExp][] = [
      [config({}, { lr: -1 }), 'adapters.0.lr', /must be > 0, got -1/],
      [config({}, { lr: 'fast' }), 'adapters.0.lr', /must be a number/],
      [
        config({}, { adapter: { peft_type: 'LORA', r: 0, lora_alpha: 8, target_modules: ['q_proj'] } }),
        'adapters.0.adapter.r',
        /must be >= 1/,
      ],
      [config({}, { batch_size: 2, micro_batch_size: 4 }), 'adapters.0.micro_batch_size', /larger than batch_size/],
      [config({ seed: -3 }), 'seed', /must be >= 0/],
      [config({ bogus: 1 }), 'bogus', /unknown field/],
      [config({ base_model: '/etc/passwd' }), 'base_model', /not found in the folders/],
      [config({ base_model: '../../../etc/passwd' }), 'base_model', /not found in the folders/],
      [config({}, { data: ['/etc/hostname'] }), 'adapters.0.data.0', /not found in the folders/],
    ];
    for (const [cfg, field, message] of cases) {
      const r = await check(url, 'r1', cfg);
      assert.equal(r.status, 400, `${field}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error!.param, field);
      assert.match(r.body.error!.message, message);
    }
    const badName = await check(url, '../x', config());
    assert.equal(badName.body.error!.param, 'name');
    // A symbolic link out of a folder is a path that does not exist.
    fs.symlinkSync('/etc', path.join(dir, 'data', 'etc'));
    const link = await check(url, 'r1', config({}, { data: ['data/etc/hostname'] }));
    assert.equal(link.body.error!.param, 'adapters.0.data.0');
    // Nothing was written by checking.
    assert.deepEqual(fs.readdirSync(path.join(dir, 'runs')), []);
  } finally {
    await studio.shutdown();
  }
});

test('the API key guards every route but /health; a browser gives it once (cookie); other hosts and sites are refused', async () => {
  const { studio, url } = await start(KEY);
  try {
    assert.equal((await fetch(`${url}/health`)).status, 200);
    assert.equal((await fetch(`${url}/api/runs`)).status, 401);
    assert.equal((await fetch(`${url}/static/vendor/vega.min.js`)).status, 401);
    assert.equal((await fetch(`${url}/v1/models`)).status, 401);
    const page = await fetch(`${url}/`);
    assert.equal(page.status, 401);
    assert.match(await page.text(), /API key/);
    assert.equal((await fetch(`${url}/?key=wrong`)).status, 401);
    const bearer = await fetch(`${url}/api/runs`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(bearer.status, 200);
    assert.deepEqual(await bearer.json(), []);
    const login = await fetch(`${url}/?key=${KEY}`, { redirect: 'manual' });
    assert.equal(login.status, 303);
    const cookie = login.headers.get('set-cookie')!;
    assert.match(cookie, /HttpOnly; SameSite=Strict/);
    const withCookie = { cookie: cookie.split(';')[0]! };
    assert.equal((await fetch(`${url}/`, { headers: withCookie })).status, 200);
    const vega = await fetch(`${url}/static/vendor/vega-lite.min.js`, { headers: withCookie });
    assert.equal(vega.status, 200);
    assert.match(vega.headers.get('content-type')!, /javascript/);
    assert.equal((await fetch(`${url}/static/app/main.js`, { headers: withCookie })).status, 200);
    // DNS rebinding: another name for 127.0.0.1.
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${url}/health`, { headers: { host: 'evil.example:80' } }, (res) => resolve(res.statusCode!));
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 403);
    const cross = await fetch(`${url}/api/config/check`, {
      method: 'POST',
      headers: { ...withCookie, origin: 'http://evil.example', 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(cross.status, 403);
    // Without a model loaded the OpenAI routes say so.
    const models = await fetch(`${url}/v1/models`, { headers: withCookie });
    assert.equal(models.status, 409);
  } finally {
    await studio.shutdown();
  }
});

test('mixlora studio: --help, and bad usage exits 2', async () => {
  const { mixlora } = await import('../helpers/cli.js');
  const help = mixlora(['studio', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--runs <dir>/);
  assert.match(help.stdout, /--api-key <key>/);
  const empty = mixlora(['studio', '--api-key', '']);
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /--api-key is empty/);
  assert.equal(mixlora(['studio', '--port', '70000']).code, 2);
  const folder = mixlora(['studio', '--folder', '/no/such/folder']);
  assert.equal(folder.code, 1);
  assert.match(folder.stderr, /--folder \/no\/such\/folder: no such folder/);
});
