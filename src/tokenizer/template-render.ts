// Chat templates are code from the model's files: @huggingface/jinja renders them synchronously, so
// a template with a huge loop or output would hang or exhaust the process. They are rendered in a
// worker thread with a heap limit, waited for synchronously (Atomics.wait) with a time limit, and the
// result taken with receiveMessageOnPort: the caller stays synchronous, the process stays safe.
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { UserError } from '../util/errors.js';

export const TEMPLATE_LIMITS = { seconds: 5, heapMb: 128, maxChars: 8 * 2 ** 20 };

interface Renderer {
  worker: Worker;
  port: MessagePort;
  signal: Int32Array;
}

let renderer: Renderer | null = null;

function start(): Renderer {
  const { port1, port2 } = new MessageChannel();
  const signal = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(new URL('./template-worker.js', import.meta.url), {
    workerData: { port: port2, signal, maxChars: TEMPLATE_LIMITS.maxChars },
    transferList: [port2],
    resourceLimits: { maxOldGenerationSizeMb: TEMPLATE_LIMITS.heapMb, maxYoungGenerationSizeMb: 16 },
    stdout: false,
    stderr: false,
  });
  worker.unref();
  worker.on('error', () => {}); // a worker killed by its heap limit: reported by the wait below
  return { worker, port: port1, signal };
}

/** Renders `template` with `context`; `where` names the template in errors (one line). */
export function renderTemplate(template: string, context: Record<string, unknown>, where: string): string {
  renderer ??= start();
  const active = renderer;
  Atomics.store(active.signal, 0, 0);
  active.port.postMessage({ template, context });
  const waited = Atomics.wait(active.signal, 0, 0, TEMPLATE_LIMITS.seconds * 1000);
  const reply = receiveMessageOnPort(active.port)?.message as { text: string } | { error: string } | undefined;
  if (waited === 'timed-out' || !reply) {
    void active.worker.terminate();
    active.port.close();
    renderer = null;
    throw new UserError(
      `${where}: rendering did not finish within ${TEMPLATE_LIMITS.seconds} s and ${TEMPLATE_LIMITS.heapMb} MiB (a runaway loop or output?)`,
    );
  }
  if ('error' in reply) throw new UserError(`${where}: ${reply.error.split('\n')[0]}`);
  return reply.text;
}
