// A job's log as it grows (training, evaluation, export): polled from /api/jobs/:id until the job ends.
import { api, h, sleep } from './dom.js';
import type { JobInfo } from './types.js';

export class JobLog {
  readonly el: HTMLElement;
  private readonly pre: HTMLPreElement;
  private readonly status: HTMLElement;
  private stopped = false;

  constructor(
    readonly id: number,
    private readonly onEnd?: (job: JobInfo) => void,
    private readonly onPoll?: (job: JobInfo) => void,
  ) {
    this.status = h('span', { class: 'badge state-running' }, 'running');
    this.pre = h('pre', { class: 'log', 'data-job': id });
    this.el = h('div', { class: 'joblog' }, h('div', { class: 'joblog-head' }, `job ${id} `, this.status), this.pre);
    void this.follow();
  }

  private async follow(): Promise<void> {
    let next = 0;
    while (!this.stopped) {
      let job: JobInfo;
      try {
        job = await api<JobInfo>(`/api/jobs/${this.id}?since=${next}`);
      } catch {
        await sleep(2000);
        continue;
      }
      const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
      if (job.log.length > 0) {
        this.pre.append(job.log.join('\n') + '\n');
        if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
      }
      next = job.next;
      this.status.textContent = job.status;
      this.status.className = `badge state-${job.status}`;
      this.onPoll?.(job);
      if (job.status !== 'running') {
        this.onEnd?.(job);
        return;
      }
      await sleep(700);
    }
  }

  dispose(): void {
    this.stopped = true;
  }
}
