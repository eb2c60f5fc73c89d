// The logit warpers on constructed logits where the right answer is known.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose } from '../helpers/assert.js';
import * as T from '../../src/tensor/index.js';
import { penalizeRepetition, sampleNext, topKFilter, topPFilter } from '../../src/generate/sampling.js';

const NEG = Number.NEGATIVE_INFINITY;

test('top-k keeps the k largest logits', () =>
  T.tidy(() => {
    const z = T.tensor([[1, 4, 2, 3]]);
    assert.deepEqual(topKFilter(z, 2).toList(), [[NEG, 4, NEG, 3]]);
  }));

test('top-p keeps the smallest most-likely set reaching p (HF rule), always the best token', () =>
  T.tidy(() => {
    const probs = [0.5, 0.3, 0.15, 0.05];
    const z = T.tensor([probs.map(Math.log)]);
    assert.deepEqual(topPFilter(z, 0.75).isfinite().toList(), [[1, 1, 0, 0]]);
    assert.deepEqual(topPFilter(z, 0.85).isfinite().toList(), [[1, 1, 1, 0]]);
    assert.deepEqual(topPFilter(z, 0.01).isfinite().toList(), [[1, 0, 0, 0]]);
  }));

test('repetition penalty divides positive and multiplies negative logits of seen tokens', () =>
  T.tidy(() => {
    const z = T.tensor([[2, -2, 1, 4]]);
    const seen = T.tensor([[0, 1, 1]], { dtype: 'int64' });
    assertClose(penalizeRepetition(z, seen, 2), [1, -4, 1, 4]);
  }));

test('temperature 0 is argmax; sampling draws only from what the filters keep', () =>
  T.tidy(() => {
    const z = T.tensor([
      [0, 5, 1, 4],
      [3, 0, 0, 0],
    ]);
    const seen = T.tensor([[0], [0]], { dtype: 'int64' });
    assert.deepEqual(
      sampleNext(z, seen, { temperature: 0, topK: null, topP: null, repetitionPenalty: null }).toNumbers(),
      [1, 0],
    );
    T.manualSeed(0);
    for (let i = 0; i < 50; i++) {
      const ids = sampleNext(z, seen, { temperature: 1, topK: 2, topP: null, repetitionPenalty: null }).toNumbers();
      assert.ok([1, 3].includes(ids[0]!), `row 0 drew ${ids[0]}`);
    }
  }));
