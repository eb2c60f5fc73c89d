// Runs as a child process of template-process.ts, started with a small --max-old-space-size: renders one
// chat template per IPC message. A template is code from the model's files; rendering it here means that
// a runaway loop is stopped by vm's timeout (which interrupts any JavaScript of this isolate, the jinja
// interpreter's included) and that exhausting the heap ends this process only (V8 aborts a process whose
// heap is full in one large allocation, e.g. range(20000000) growing one array, even in a worker thread
// with resourceLimits: https://github.com/nodejs/node/issues/47224). The parent names the template.
import vm from 'node:vm';
import { Template } from '@huggingface/jinja';
import type { TemplateJob, TemplateReply } from './template-process.js';

/** Compiled templates, by source (a model has one or two). */
const compiled = new Map<string, Template>();
const sandbox = vm.createContext({ job: () => '' });
const run = new vm.Script('job()');

function render(job: TemplateJob): TemplateReply {
  try {
    const text = run.runInContext(
      Object.assign(sandbox, {
        job: () => {
          let t = compiled.get(job.template);
          if (!t) {
            if (compiled.size >= 8) compiled.clear();
            t = new Template(job.template);
            compiled.set(job.template, t);
          }
          return t.render(job.context);
        },
      }),
      { timeout: job.seconds * 1000 },
    ) as string;
    if (text.length > job.maxChars)
      return { id: job.id, error: `its output is longer than ${job.maxChars} characters`, kind: 'output' };
    return { id: job.id, text };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT')
      return { id: job.id, error: `rendering did not finish within ${job.seconds} s`, kind: 'time' };
    return { id: job.id, error: String((e as Error)?.message ?? e).split('\n')[0]! };
  }
}

process.on('message', (job: TemplateJob) => {
  const reply = render(job);
  sandbox.job = () => '';
  process.send!(reply);
});
// The parent is gone (its end of the channel closed): nothing more to render.
process.on('disconnect', () => process.exit(0));
process.send!({ ready: true });
