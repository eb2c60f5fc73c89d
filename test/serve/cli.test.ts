// `bin/mixlora serve` as a process: it says when it is ready, and on SIGTERM stops accepting, lets
// running requests finish (or ends them at --shutdown-timeout) and exits 0. Bad flags exit 2 or 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { MIXLORA_BIN, STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { sseRecords } from './serve-fixtures.js';

const MODEL = ['--model', STORIES_BIN, '--tokenizer', STORIES_TOK];

interface Proc {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

async function serve(extra: string[]): Promise<Proc> {
  const child = spawn(
    process.execPath,
    [MIXLORA_BIN, 'serve', ...MODEL, '--host', '127.0.0.1', '--port', '0', ...extra],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line in 60 s:\n${err}`)), 60_000);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (c: string) => {
      err += c;
      const m = /ready: listening on (http:\/\/[^\s]+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void exited.then(() => reject(new Error(`exited before ready:\n${err}`)));
  });
  return { child, url, stderr: () => err, exited };
}

/** Starts a stream and resolves once its first chunk arrived; `rest` is the whole body. */
async function startStream(url: string, maxTokens: number, model = 'stories260K') {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model,
      prompt: 'Once upon a time',
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = decoder.decode((await reader.read()).value);
  const rest = (async () => {
    for (let i = 0; i < 100_000; i++) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value);
    }
    return text;
  })();
  return { rest };
}

test('SIGTERM: no new connections, the running request finishes, exit 0', async () => {
  const p = await serve([]);
  const s = await startStream(p.url, 400);
  p.child.kill('SIGTERM');
  for (let i = 0; i < 400 && !p.stderr().includes('SIGTERM'); i++) await new Promise((r) => setTimeout(r, 10));
  await assert.rejects(fetch(`${p.url}/health`), 'the port is closed to new connections');
  const recs = sseRecords(await s.rest);
  const last = recs[recs.length - 1]!;
  const finish = recs
    .flatMap((r) => r.choices.map((c: { finish_reason: string | null }) => c.finish_reason))
    .filter(Boolean);
  assert.deepEqual(finish, [last.usage.completion_tokens === 400 ? 'length' : 'stop']);
  assert.equal(await p.exited, 0, p.stderr());
  assert.match(p.stderr(), /stopped/);
});

test('SIGTERM with --shutdown-timeout 0: running requests end at once (finish_reason abort), exit 0', async () => {
  const p = await serve(['--shutdown-timeout', '0', '--model-name', 'tiny']);
  const res = await fetch(`${p.url}/v1/models`);
  assert.deepEqual(
    ((await res.json()) as { data: { id: string }[] }).data.map((m) => m.id),
    ['tiny'],
  );
  const s = await startStream(p.url, 500, 'tiny');
  p.child.kill('SIGTERM');
  const recs = sseRecords(await s.rest);
  const last = recs[recs.length - 1]!;
  assert.ok(last.usage.completion_tokens < 500, 'ended before max_tokens');
  assert.equal(recs[recs.length - 2]!.choices[0].finish_reason, 'abort');
  assert.equal(await p.exited, 0, p.stderr());
});

test('bad flags: NAME=DIR malformed exits 2; a missing adapter folder exits 1 with one line', () => {
  const usage = mixlora(['serve', ...MODEL, '--adapter', 'nodir']);
  assert.equal(usage.code, 2, usage.stderr);
  assert.match(usage.stderr, /--adapter takes NAME=DIR/);
  const missing = path.join(tempDir(), 'none');
  const r = mixlora(['serve', ...MODEL, '--port', '0', '--adapter', `a=${missing}`]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`mixlora: .*${missing.replaceAll('/', '\\/')}`));
  assert.ok(!r.stderr.includes('    at '), 'no stack trace');
});

test('an empty --api-key is a usage error (exit 2); a missing --adapter-root folder exits 1 naming it', () => {
  const empty = mixlora(['serve', ...MODEL, '--port', '0', '--api-key', '']);
  assert.equal(empty.code, 2, empty.stderr);
  assert.match(empty.stderr, /--api-key is empty/);
  const missing = path.join(tempDir(), 'no-root');
  const r = mixlora(['serve', ...MODEL, '--port', '0', '--adapter-root', missing]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`--adapter-root ${missing.replaceAll('/', '\\/')}: no such folder`));
});

test('SIGTERM then SIGINT: said once each, stopped once, exit 0', async () => {
  const p = await serve([]);
  const s = await startStream(p.url, 300);
  p.child.kill('SIGTERM');
  for (let i = 0; i < 400 && !p.stderr().includes('SIGTERM'); i++) await new Promise((r) => setTimeout(r, 10));
  p.child.kill('SIGINT');
  await s.rest;
  assert.equal(await p.exited, 0, p.stderr());
  assert.equal(p.stderr().match(/stopped/g)?.length, 1, p.stderr());
  assert.match(p.stderr(), /SIGINT: already stopping/);
});
