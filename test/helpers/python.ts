// The project's Python environment (.venv, made by `make setup`) for checks against the reference
// Python tools: PyTorch 2.x, safetensors, tensorboard, lm_eval.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { ROOT } from './fixtures.js';

/** .venv/bin/python of the checkout; throws when it is missing (make setup creates it). */
export function venvPython(): string {
  const py = path.join(ROOT, '.venv', 'bin', 'python');
  if (!fs.existsSync(py)) throw new Error(`${py} is missing: run \`make setup\` (it creates the Python environment)`);
  return py;
}

/** Why `module` cannot be imported by the venv's Python, or null when it can. */
export function missingModule(module: string): string | null {
  const r = spawnSync(venvPython(), ['-c', `import ${module}`], { encoding: 'utf8' });
  if (r.status === 0) return null;
  const last = r.stderr.trim().split('\n').pop() ?? '';
  return `${module} is not importable by ${venvPython()} (${last}); \`make setup\` installs it`;
}

/** Runs a Python script with the venv's Python; returns stdout, throws with stderr on failure. */
export function runPython(
  script: string,
  args: string[] = [],
  opts: { timeoutMs?: number; env?: Record<string, string> } = {},
): string {
  const r = spawnSync(venvPython(), ['-c', script, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    maxBuffer: 1 << 26,
    timeout: opts.timeoutMs ?? 300_000,
  });
  if (r.status !== 0) throw new Error(`python failed (${r.status ?? r.signal}): ${r.stderr}`);
  return r.stdout;
}

/** Prints {dir: {tag: [[step, value]...]}} for TensorBoard run folders, read by TensorBoard's EventAccumulator. */
export const READ_SCALARS = `
import sys, json
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out = {}
for d in sys.argv[1:]:
    acc = EventAccumulator(d)
    acc.Reload()
    out[d] = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
print(json.dumps(out))
`;

/** runPython without blocking the event loop (for scripts that talk to a server in this process). */
export function runPythonAsync(
  script: string,
  args: string[] = [],
  opts: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(venvPython(), ['-c', script, ...args], {
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new Error(`python failed (${code ?? signal}): ${Buffer.concat(err).toString('utf8')}`));
    });
  });
}
