// The per-request sampler against Hugging Face's warper semantics (temperature, top-k, top-p as in
// transformers' TopKLogitsWarper / TopPLogitsWarper), computed here by hand on small distributions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RowSampler, topN } from '../../src/serve/sampling.js';

const logp = Float32Array.from([0.4, 0.3, 0.2, 0.1].map(Math.log)); // probabilities 0.4, 0.3, 0.2, 0.1
const params = { temperature: 1, topP: null, topK: null, seed: 5, logprobs: null };

function frequencies(s: RowSampler, draws: number): number[] {
  const n = [0, 0, 0, 0];
  for (let i = 0; i < draws; i++) n[s.pick(-1, logp).id]! += 1;
  return n.map((c) => c / draws);
}

test('plain sampling follows softmax(logp / T); a seed reproduces the draws', () => {
  const f = frequencies(new RowSampler(params), 20_000);
  [0.4, 0.3, 0.2, 0.1].forEach((p, i) => assert.ok(Math.abs(f[i]! - p) < 0.015, `${i}: ${f[i]} vs ${p}`));
  // T = 0.5 squares the probabilities before normalising: 16:9:4:1 / 30.
  const g = frequencies(new RowSampler({ ...params, temperature: 0.5 }), 20_000);
  [16, 9, 4, 1].forEach((w, i) => assert.ok(Math.abs(g[i]! - w / 30) < 0.015, `T 0.5, ${i}: ${g[i]}`));
  const draws = (s: RowSampler) => Array.from({ length: 50 }, () => s.pick(-1, logp).id);
  assert.deepEqual(draws(new RowSampler(params)), draws(new RowSampler(params)));
  assert.notDeepEqual(draws(new RowSampler(params)), draws(new RowSampler({ ...params, seed: 6 })));
});

test('top-k keeps the k most likely; top-p the smallest set reaching p (HF: drop cumulative <= 1 - p)', () => {
  const k2 = frequencies(new RowSampler({ ...params, topK: 2 }), 20_000);
  assert.equal(k2[2]! + k2[3]!, 0);
  assert.ok(Math.abs(k2[0]! - 0.4 / 0.7) < 0.015);
  // p 0.5: ascending cumulative 0.1, 0.3, 0.6, 1.0; 0.1 and 0.2 are dropped; 0.4 and 0.3 stay.
  const p5 = frequencies(new RowSampler({ ...params, topP: 0.5 }), 20_000);
  assert.equal(p5[2]! + p5[3]!, 0);
  assert.ok(Math.abs(p5[1]! - 0.3 / 0.7) < 0.015);
  // A tiny p keeps the most likely token only.
  assert.deepEqual(frequencies(new RowSampler({ ...params, topP: 0.01 }), 200), [1, 0, 0, 0]);
  // Greedy takes the given argmax and reports log-probabilities when asked.
  const greedy = new RowSampler({ ...params, temperature: 0, logprobs: 2 }).pick(0, logp);
  assert.equal(greedy.id, 0);
  assert.ok(Math.abs(greedy.logprob! - Math.log(0.4)) < 1e-6);
  assert.deepEqual(
    greedy.top!.map(([id]) => id),
    [0, 1],
  );
});

test('topN equals a full sort', () => {
  const v = Float32Array.from(
    { length: 1000 },
    (_, i) => Math.sin(i * 12.9898) * 43758.5453 - Math.floor(Math.sin(i * 12.9898) * 43758.5453),
  );
  const sorted = [...v].map((x, i) => [i, x] as [number, number]).sort((a, b) => b[1] - a[1]);
  assert.deepEqual(topN(v, 7), sorted.slice(0, 7));
});

test("penalties follow OpenAI's formula: logit - count · frequency - (count > 0) · presence", () => {
  const logits = Float32Array.from([1.0, 0.6, -5]);
  const picks = (frequencyPenalty: number, presencePenalty: number) => {
    const s = new RowSampler({ ...params, temperature: 0, frequencyPenalty, presencePenalty });
    return Array.from({ length: 4 }, () => s.pick(0, logits).id);
  };
  // After one pick of 0: 1.0 - 0.3 - 0.05 = 0.65 > 0.6 (0 again); after two: 1.0 - 0.6 - 0.05 = 0.35 (then 1).
  assert.deepEqual(picks(0.3, 0.05).slice(0, 3), [0, 0, 1]);
  // A larger presence penalty: 1.0 - 0.3 - 0.15 = 0.55 < 0.6 after one pick.
  assert.deepEqual(picks(0.3, 0.15).slice(0, 2), [0, 1]);
  assert.deepEqual(picks(0, 0), [0, 0, 0, 0]);
});

test('logit_bias and min_tokens change the choice, not the reported log-probabilities', () => {
  const logits = Float32Array.from([2, 1, 0]);
  const biased = new RowSampler({ ...params, temperature: 0, logprobs: 1, logitBias: new Map([[2, 5]]) });
  const c = biased.pick(0, logits);
  assert.equal(c.id, 2);
  const norm = Math.log(Math.exp(2) + Math.exp(1) + 1);
  assert.ok(Math.abs(c.logprob! - (0 - norm)) < 1e-6, 'the model’s own log-probability');
  assert.equal(c.top![0]![0], 0);
  // EOS (id 0 here) cannot come before min_tokens; stop_token_ids neither.
  const held = new RowSampler({ ...params, temperature: 0, minTokens: 2, stopTokenIds: [1] }, { eosIds: [0] });
  assert.deepEqual([held.pick(0, logits).id, held.pick(0, logits).id, held.pick(0, logits).id], [2, 2, 0]);
});

test("repetition penalty follows Hugging Face's rule over the prompt and the output", () => {
  // Seen tokens: positive logits divided by the penalty, negative ones multiplied (transformers'
  // RepetitionPenaltyLogitsProcessor); the prompt's tokens count as seen.
  const logits = Float32Array.from([2, -2, 1.5, 0.9]);
  const penalised = (prompt: number[]) => {
    const s = new RowSampler({ ...params, temperature: 0, logprobs: 0, repetitionPenalty: 2 }, { prompt });
    return Array.from({ length: 3 }, () => s.pick(0, logits));
  };
  // Prompt [0]: 2 / 2 = 1 < 1.5, so 2; then 1.5 / 2 = 0.75 < 0.9 < 1, so 0; and 0 again, as a token is
  // penalised once however often it was seen.
  assert.deepEqual(
    penalised([0]).map((c) => c.id),
    [2, 0, 0],
  );
  // A negative logit seen in the prompt goes further down: -2 · 2 = -4 is never chosen before the others.
  const negative = new RowSampler({ ...params, temperature: 0, repetitionPenalty: 2 }, { prompt: [1] });
  assert.equal(negative.pick(0, Float32Array.from([-3, -2, -3.5])).id, 0);
  // Reported log-probabilities stay the model's own.
  const first = penalised([0])[0]!;
  const norm = Math.log(Math.exp(2) + Math.exp(-2) + Math.exp(1.5) + Math.exp(0.9));
  assert.ok(Math.abs(first.logprob! - (1.5 - norm)) < 1e-6);
  // 1 (or none) changes nothing.
  const plain = new RowSampler({ ...params, temperature: 0, repetitionPenalty: 1 }, { prompt: [0] });
  assert.equal(plain.pick(0, logits).id, 0);
});
