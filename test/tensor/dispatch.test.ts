// Which of the addon's own kernels a CPU takes: the small-row products (native/kernels/small_gemm.cc), and through them
// decode attention and the adapters' low-rank rows, run AVX-512 where the CPU has it, else AVX2 with FMA, else
// not at all (the GEMM library's path). ATen's own cap, ATEN_CPU_CAPABILITY, caps them too (default: off;
// avx2: at most AVX2), and MIXLORA_GEMM=aten or onednn turns them off. Each setting in a fresh process (the
// choice is made once), reported by `mixlora info --json`, and a greedy decode under it gives the same text.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK } from '../helpers/fixtures.js';

const flags = new Set(
  fs.existsSync('/proc/cpuinfo')
    ? (/^flags\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(/\s+/)
    : [],
);
const avx2 = process.arch === 'x64' && flags.has('avx2') && flags.has('fma');
const avx512 = process.arch === 'x64' && flags.has('avx512f');

const settings: [string, Record<string, string>, 'avx512' | 'avx2' | 'off'][] = [
  ['no caps', {}, avx512 ? 'avx512' : avx2 ? 'avx2' : 'off'],
  ['ATEN_CPU_CAPABILITY=avx2', { ATEN_CPU_CAPABILITY: 'avx2' }, avx2 ? 'avx2' : 'off'],
  ['ATEN_CPU_CAPABILITY=default', { ATEN_CPU_CAPABILITY: 'default' }, 'off'],
  ['MIXLORA_GEMM=aten', { MIXLORA_GEMM: 'aten' }, 'off'],
  ['MIXLORA_GEMM=onednn', { MIXLORA_GEMM: 'onednn' }, 'off'],
];

const texts = new Map<string, string>();
for (const [what, env, want] of settings) {
  test(`the small-row kernels under ${what}: ${want}, and a greedy decode runs`, () => {
    const info = mixlora(['info', '--json'], { env });
    assert.equal(info.code, 0, info.stderr);
    assert.equal((JSON.parse(info.stdout) as { small_gemm: string }).small_gemm, want);
    const g = mixlora(
      [
        'generate',
        '--model',
        STORIES_BIN,
        '--tokenizer',
        STORIES_TOK,
        '--prompt',
        'Once upon a time',
        '--max-new-tokens',
        '24',
      ],
      { env: { ...env, MIXLORA_NUM_THREADS: '1' } },
    );
    assert.equal(g.code, 0, g.stderr);
    texts.set(what, g.stdout.trim());
    assert.ok(g.stdout.trim().length > 'Once upon a time'.length, g.stdout);
  });
}

test('every setting decodes the same greedy text (stories260K: the kernels agree to well within a token)', () => {
  assert.equal(texts.size, settings.length);
  assert.equal(new Set(texts.values()).size, 1, [...texts].map(([k, v]) => `${k}: ${v}`).join('\n'));
});
