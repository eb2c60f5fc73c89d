// Prompt log-probabilities (echo with logprobs, as OpenAI's legacy completions and vLLM return them) and
// the sampling fields people send (logit_bias, penalties, repetition_penalty, stop_token_ids, min_tokens,
// ignore_eos):
// - the prompt's token_logprobs equal log-softmax of the model's own forward over the prompt (1e-5), the
//   first one null; tokens and text_offset cut the echoed text; streaming gives the same entries;
// - max_tokens 0 with echo scores without generating; a request of several prompts is scored in one
//   prefill forward;
// - each field changes exactly what its definition says, per row.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/tensor/index.js';
import { generate } from '../../src/generate/generate.js';
import { MODEL_NAME, postJson, sseRecords, startServer, type Running } from './serve-fixtures.js';

let srv: Running;
const url = () => `${srv.url}/v1/completions`;
const PROMPT = 'Once upon a time, there was a little girl';

before(async () => {
  srv = await startServer();
});
after(async () => srv.close());

/** log p(x_j | x_<j) for j ≥ 1 from one forward of the model over `ids` alone. */
function directLogprobs(ids: number[]): number[] {
  return T.noGrad(() =>
    T.tidy(() => {
      const input = T.tensor([ids], { dtype: 'int64' }); // [1, P]
      const logp = srv.loaded.model.forward(input).select(0, 0).logSoftmax(-1); // [P, V]
      const next = T.tensor(
        ids.slice(1).map((id) => [id]),
        { dtype: 'int64' },
      ); // [P-1, 1]
      return logp
        .narrow(0, 0, ids.length - 1)
        .gather(1, next)
        .reshape(-1)
        .toNumbers();
    }),
  );
}

test('echo + logprobs: the prompt tokens first (first null), equal to the model’s forward; offsets cut the text', async () => {
  const ids = srv.loaded.tokenizer.encode(PROMPT);
  const r = await postJson(url(), {
    model: MODEL_NAME,
    prompt: PROMPT,
    echo: true,
    logprobs: 3,
    max_tokens: 4,
    temperature: 0,
  });
  assert.equal(r.status, 200, r.text);
  const c = r.json.choices[0];
  const lp = c.logprobs;
  assert.equal(lp.tokens.length, ids.length + 4);
  assert.equal(lp.token_logprobs[0], null);
  assert.equal(lp.top_logprobs[0], null);
  const direct = directLogprobs(ids);
  direct.forEach((x, j) =>
    assert.ok(Math.abs(lp.token_logprobs[j + 1] - x) < 1e-5, `token ${j + 1}: ${lp.token_logprobs[j + 1]} vs ${x}`),
  );
  for (let j = 1; j < lp.tokens.length; j++) {
    const top = lp.top_logprobs[j] as Record<string, number>;
    assert.equal(Object.keys(top).length, 3);
    // The best alternative is at least as likely as the token itself.
    assert.ok(Math.max(...Object.values(top)) >= lp.token_logprobs[j] - 1e-6);
  }
  // Greedy tokens are their position's most likely ones.
  for (let j = ids.length; j < lp.tokens.length; j++) assert.ok(lp.tokens[j] in lp.top_logprobs[j]);
  assert.ok(c.text.startsWith(PROMPT));
  for (let j = 1; j < lp.tokens.length; j++) {
    assert.ok(lp.text_offset[j] >= lp.text_offset[j - 1]);
    assert.equal(c.text.slice(lp.text_offset[j], lp.text_offset[j] + lp.tokens[j].length), lp.tokens[j], `token ${j}`);
  }

  // Streamed: the same entries over the chunks, the prompt's in the first.
  const s = await fetch(url(), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: MODEL_NAME,
      prompt: PROMPT,
      echo: true,
      logprobs: 3,
      max_tokens: 4,
      temperature: 0,
      stream: true,
    }),
  });
  const recs = sseRecords(await s.text());
  const joined = { tokens: [] as string[], token_logprobs: [] as (number | null)[], text_offset: [] as number[] };
  let text = '';
  for (const rec of recs) {
    const ch = rec.choices[0];
    text += ch.text;
    if (!ch.logprobs) continue;
    joined.tokens.push(...ch.logprobs.tokens);
    joined.token_logprobs.push(...ch.logprobs.token_logprobs);
    joined.text_offset.push(...ch.logprobs.text_offset);
  }
  assert.equal(text, c.text);
  assert.deepEqual(joined, { tokens: lp.tokens, token_logprobs: lp.token_logprobs, text_offset: lp.text_offset });
});

test('max_tokens 0 with echo scores the prompt only; several prompts are scored in one prefill', async () => {
  const prompts = ['Once upon a time', 'The little dog ran to the', 'Lily', 'Tom and Sue went to the park'];
  assert.ok(srv.server.ctx.engine.peakPrefill < 4);
  const r = await postJson(url(), { model: MODEL_NAME, prompt: prompts, echo: true, logprobs: 0, max_tokens: 0 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.usage.completion_tokens, 0);
  r.json.choices.forEach((c: any, i: number) => {
    assert.equal(c.text, prompts[i]);
    assert.equal(c.finish_reason, 'length');
    const ids = srv.loaded.tokenizer.encode(prompts[i]!);
    assert.equal(c.logprobs.tokens.length, ids.length);
    directLogprobs(ids).forEach((x, j) => assert.ok(Math.abs(c.logprobs.token_logprobs[j + 1] - x) < 1e-5));
    assert.deepEqual(c.logprobs.top_logprobs.slice(1), new Array(ids.length - 1).fill({}));
  });
  assert.equal(srv.server.ctx.engine.peakPrefill, 4, 'the four prompts were scored in one forward');
  assert.equal(
    (await postJson(url(), { model: MODEL_NAME, prompt: 'Hi', max_tokens: 0 })).status,
    400,
    'max_tokens 0 without echo',
  );
});

const greedy = async (extra: Record<string, unknown>, prompt = PROMPT, maxTokens = 8) => {
  const r = await postJson(url(), {
    model: MODEL_NAME,
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    logprobs: 0,
    ...extra,
  });
  assert.equal(r.status, 200, r.text);
  const c = r.json.choices[0];
  return {
    text: c.text as string,
    tokens: c.logprobs.tokens as string[],
    finish: c.finish_reason as string,
    usage: r.json.usage,
  };
};

test('logit_bias, stop_token_ids, min_tokens and ignore_eos do what their definitions say', async () => {
  const tok = srv.loaded.tokenizer;
  const plain = await greedy({});
  const firstId = tok.encode(PROMPT + plain.text).slice(tok.encode(PROMPT).length)[0]!;
  // -100 on the greedy first token: another one comes first.
  const banned = await greedy({ logit_bias: { [firstId]: -100 } });
  assert.notEqual(banned.tokens[0], plain.tokens[0]);
  // +100 on a token: it is chosen at every step.
  const forced = tok.encode('dragon', { special: false })[0]!;
  const always = await greedy({ logit_bias: { [forced]: 100 } }, PROMPT, 5);
  assert.equal(new Set(always.tokens).size, 1);
  // EOS forced: it ends at once ('stop'); with ignore_eos it runs to max_tokens; min_tokens holds it back.
  const eos = srv.loaded.model.config.eosTokenIds[0]!;
  const ends = await greedy({ logit_bias: { [eos]: 100 } });
  assert.equal(ends.finish, 'stop');
  assert.equal(ends.usage.completion_tokens, 1);
  assert.equal(ends.text, '');
  const ignored = await greedy({ logit_bias: { [eos]: 100 }, ignore_eos: true }, PROMPT, 5);
  assert.equal(ignored.finish, 'length');
  assert.equal(ignored.usage.completion_tokens, 5);
  const held = await greedy({ logit_bias: { [eos]: 100 }, min_tokens: 3 });
  assert.equal(held.finish, 'stop');
  assert.equal(held.usage.completion_tokens, 4, '3 tokens, then EOS');
  // stop_token_ids: the sequence ends at that token, which is not text.
  const stopAt = tok.encode(PROMPT + plain.text).slice(tok.encode(PROMPT).length)[2]!;
  const stopped = await greedy({ stop_token_ids: [stopAt] });
  assert.equal(stopped.finish, 'stop');
  assert.equal(stopped.usage.completion_tokens, 3);
  assert.equal(stopped.text, plain.tokens.slice(0, 2).join(''));
  // min_tokens holds back stop_token_ids too (vLLM masks them before min_tokens).
  const late = await greedy({ stop_token_ids: [stopAt], min_tokens: 8 });
  assert.equal(late.usage.completion_tokens, 8);
  assert.equal(late.finish, 'length');
  // And stop strings: one in the first tokens' text does not end the sequence before min_tokens.
  const word = plain.tokens[1]!;
  assert.equal((await greedy({ stop: word })).text, plain.tokens[0]);
  const kept = await greedy({ stop: word, min_tokens: 8 });
  assert.equal(kept.text, plain.text);
});

test('presence and frequency penalties: repeated tokens lose OpenAI’s amounts; rows of one batch keep their own', async () => {
  const base = await greedy({}, 'Once upon a time', 64);
  const penalised = await greedy({ presence_penalty: 2, frequency_penalty: 1 }, 'Once upon a time', 64);
  const repeats = (tokens: string[]) => tokens.length - new Set(tokens).size;
  assert.ok(
    repeats(penalised.tokens) < repeats(base.tokens),
    `${repeats(penalised.tokens)} vs ${repeats(base.tokens)}`,
  );
  // Sent together, each request keeps its own fields.
  const [a, b] = await Promise.all([
    greedy({}, 'Once upon a time', 64),
    greedy({ presence_penalty: 2, frequency_penalty: 1 }, 'Once upon a time', 64),
  ]);
  assert.equal(a.text, base.text);
  assert.equal(b.text, penalised.text);
});

test("repetition_penalty is Hugging Face's, as `generate --repetition-penalty`; out of range is a 400", async () => {
  const prompt = 'Once upon a time';
  const { model, tokenizer } = srv.loaded;
  const ids = tokenizer.encode(prompt);
  const eos = model.config.eosTokenIds;
  const expected = (penalty: number | null) => {
    const [out] = generate(model, [ids], {
      maxNewTokens: 48,
      temperature: 0,
      topK: null,
      topP: null,
      repetitionPenalty: penalty,
      stopIds: eos,
    });
    return tokenizer.decodeContinuation(
      ids,
      out!.filter((id) => !eos.includes(id)),
    );
  };
  const penalised = await greedy({ repetition_penalty: 1.5 }, prompt, 48);
  assert.equal(penalised.text, expected(1.5));
  assert.notEqual(penalised.text, expected(null), 'the penalty changed nothing on this prompt');
  for (const bad of [0, -1, 'x']) {
    const r = await postJson(url(), { model: MODEL_NAME, prompt, max_tokens: 4, repetition_penalty: bad });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'repetition_penalty');
  }
});
