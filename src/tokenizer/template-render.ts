// Chat templates are code from the model's files, and @huggingface/jinja renders them synchronously: a
// template with a runaway loop, a huge output or a huge allocation would hang or exhaust the process.
// They render in a child process (template-child.ts, driven by template-process.ts) with a time limit,
// a heap limit and an output limit; whatever the template does, the caller gets its text or a UserError
// naming the template, and the process goes on.
//
// A worker thread with resourceLimits is not enough: V8 aborts the whole process (exit 134, "Reached heap
// limit") when a worker's heap fills up in one large allocation, e.g. `range(20000000)` growing one
// array (https://github.com/nodejs/node/issues/47224); only a process of its own contains that.
//
// renderTemplate is synchronous (the CLI, the tokenizer's callers): this thread waits (Atomics.wait)
// while a worker thread talks to the renderer process. renderTemplateAsync never blocks the event loop
// (the server): it talks to a renderer process of its own directly.
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { UserError } from '../util/errors.js';
import { longestWaitMs, TemplateProcess, type RenderResult, type TemplateLimits } from './template-process.js';

export type { TemplateLimits } from './template-process.js';

export const TEMPLATE_LIMITS: Readonly<TemplateLimits> = { seconds: 5, heapMb: 128, maxChars: 8 * 2 ** 20 };

const HINTS: Partial<Record<string, string>> = {
  time: ' (a runaway loop?)',
  heap: ' (a runaway loop or a huge list or text?)',
};

function finish(result: RenderResult, where: string): string {
  if ('text' in result) return result.text;
  throw new UserError(`${where}: ${result.error.split('\n')[0]}${HINTS[result.kind] ?? ''}`);
}

interface Broker {
  worker: Worker;
  port: MessagePort;
  signal: Int32Array;
}

let broker: Broker | null = null;

/** How long the worker may take to load (it signals signal[1] when it has). */
const BROKER_START_MS = 10_000;

function startBroker(where: string): Broker {
  const { port1, port2 } = new MessageChannel();
  // [0]: a reply is ready; [1]: the worker has loaded
  const signal = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(new URL('./template-worker.js', import.meta.url), {
    workerData: { port: port2, signal },
    transferList: [port2],
    // not this process's flags: `node --input-type=module -e ...` would make the worker fail to load
    execArgv: [],
    stdout: false,
    stderr: false,
  });
  worker.unref();
  worker.on('error', () => {}); // a broken worker: the waits report it
  if (Atomics.wait(signal, 1, 0, BROKER_START_MS) === 'timed-out') {
    void worker.terminate();
    port1.close();
    throw new UserError(`${where}: the template renderer did not start within ${BROKER_START_MS / 1000} s`);
  }
  return { worker, port: port1, signal };
}

/** Renders `template` with `context`, waiting for it; `where` names the template in errors (one line). */
export function renderTemplate(
  template: string,
  context: Record<string, unknown>,
  where: string,
  limits: TemplateLimits = TEMPLATE_LIMITS,
): string {
  broker ??= startBroker(where);
  const b = broker;
  Atomics.store(b.signal, 0, 0);
  b.port.postMessage({ template, context, limits });
  // The worker answers within the renderer's own limits; this wait only guards against a worker that
  // is itself broken.
  const waitMs = longestWaitMs(limits) + 5000;
  const waited = Atomics.wait(b.signal, 0, 0, waitMs);
  const reply = receiveMessageOnPort(b.port)?.message as RenderResult | undefined;
  if (waited === 'timed-out' || !reply) {
    void b.worker.terminate();
    b.port.close();
    broker = null;
    throw new UserError(`${where}: the template renderer did not answer within ${Math.round(waitMs / 1000)} s`);
  }
  return finish(reply, where);
}

let renderer: TemplateProcess | null = null;

/** renderTemplate without blocking: the same limits and errors; renderings run one after another. */
export async function renderTemplateAsync(
  template: string,
  context: Record<string, unknown>,
  where: string,
  limits: TemplateLimits = TEMPLATE_LIMITS,
): Promise<string> {
  renderer ??= new TemplateProcess();
  return finish(await renderer.render(template, context, limits), where);
}
