// Runs in a worker thread for template-render.ts's synchronous renderTemplate: the calling thread waits
// (Atomics.wait) while this thread has the renderer process (template-process.ts) render the template,
// then takes the reply with receiveMessageOnPort. Nothing of the template runs in this thread.
import { workerData, type MessagePort } from 'node:worker_threads';
import { TemplateProcess, type TemplateLimits } from './template-process.js';

interface Job {
  template: string;
  context: Record<string, unknown>;
  limits: TemplateLimits;
}

const { port, signal } = workerData as { port: MessagePort; signal: Int32Array };
const renderer = new TemplateProcess();

port.on('message', (job: Job) => {
  void renderer.render(job.template, job.context, job.limits).then((reply) => {
    port.postMessage(reply);
    Atomics.store(signal, 0, 1);
    Atomics.notify(signal, 0);
  });
});
Atomics.store(signal, 1, 1);
Atomics.notify(signal, 1);
