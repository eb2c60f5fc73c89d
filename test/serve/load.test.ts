// A bounded load test: 64 requests over 16 connections, mixed adapters and streaming, each answered
// with what `generate` gives for its prompt and adapter alone; afterwards the live tensor count is
// where it started (KV slots, batches and logits all freed).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import * as T from '../../src/tensor/index.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import {
  MODEL_NAME,
  referenceCompletion,
  sseRecords,
  startServer,
  writeAdapters,
  type Running,
} from './serve-fixtures.js';

let srv: Running;
let dirs: Record<string, string>;

before(async () => {
  const { loadModel } = await import('../../src/models/load.js');
  const m = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  dirs = writeAdapters(tempDir(), m.model);
  m.model.dispose();
  srv = await startServer({ adapters: Object.entries(dirs), maxBatch: 12 });
});
after(async () => srv.close());

/** POST over a given agent (so the 16 workers use at most 16 connections). */
function post(agent: http.Agent, url: string, body: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request(
      url,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

test('64 requests over 16 connections, mixed adapters: all answered, each equal to generate alone; no tensor left', async () => {
  const prompts = ['Once upon a time', 'The little dog', 'Tom and Sue went to', 'A big red ball'];
  const names = [MODEL_NAME, 'lora', 'dora', 'mixlora'];
  // The longest cross 64 positions: the KV slots grow while other rows run.
  const lengths = [6, 13, 20, 90];
  const expected = new Map<string, string>();
  for (const p of prompts)
    for (const n of names)
      for (const len of lengths)
        expected.set(
          `${n}|${p}|${len}`,
          await referenceCompletion(srv.loaded, n === MODEL_NAME ? null : dirs[n]!, p, len),
        );

  // Warm up once, then count: what the server holds while idle must not grow.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  await post(agent, `${srv.url}/v1/completions`, { model: 'mixlora', prompt: 'Hi', max_tokens: 2 });
  const before = T.liveTensors();
  srv.server.ctx.engine.peakBatch = 0;

  const jobs = Array.from({ length: 64 }, (_, i) => ({
    model: names[i % 4]!,
    prompt: prompts[Math.floor(i / 4) % 4]!,
    max_tokens: lengths[Math.floor(i / 16)]!,
    stream: i % 3 === 0,
  }));
  const answers: string[] = Array(64).fill('');
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      const r = await post(agent, `${srv.url}/v1/completions`, { ...jobs[i], temperature: 0 });
      assert.equal(r.status, 200, r.text);
      answers[i] = jobs[i]!.stream
        ? sseRecords(r.text)
            .map((c) => c.choices[0]?.text ?? '')
            .join('')
        : (JSON.parse(r.text) as { choices: { text: string }[] }).choices[0]!.text;
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  agent.destroy();
  jobs.forEach((j, i) =>
    assert.equal(answers[i], expected.get(`${j.model}|${j.prompt}|${j.max_tokens}`), `request ${i}`),
  );
  assert.ok(
    srv.server.ctx.engine.peakBatch >= 8,
    `requests shared steps (peak batch ${srv.server.ctx.engine.peakBatch})`,
  );
  assert.ok(srv.server.ctx.engine.peakBatch <= 12, '--max-batch holds');
  assert.equal(srv.server.ctx.engine.batchSize, 0);
  assert.equal(T.liveTensors(), before, 'the live tensor count is where it started');
});
