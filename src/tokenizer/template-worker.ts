// Runs in a worker thread (template-render.ts): renders one chat template per message, so a hostile
// template's runaway loop or output is stopped by the worker's time and heap limits, not the process's.
import { workerData, type MessagePort } from 'node:worker_threads';
import { Template } from '@huggingface/jinja';

interface Job {
  template: string;
  context: Record<string, unknown>;
}

const { port, signal, maxChars } = workerData as { port: MessagePort; signal: Int32Array; maxChars: number };
const compiled = new Map<string, Template>();

port.on('message', (job: Job) => {
  let reply: { text: string } | { error: string };
  try {
    let t = compiled.get(job.template);
    if (!t) {
      t = new Template(job.template);
      compiled.set(job.template, t);
    }
    const text = t.render(job.context);
    reply = text.length > maxChars ? { error: `its output is longer than ${maxChars} characters` } : { text };
  } catch (e) {
    reply = { error: (e as Error).message };
  }
  port.postMessage(reply);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
});
