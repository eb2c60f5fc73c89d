// What long-running work reports its progress to (bars and log lines); the CLI's stderr display
// (cli/progress.ts) is one; library callers may pass their own.
export interface ProgressBar {
  update(value: number, fields?: Record<string, string | number>): void;
  stop(): void;
}

export interface Progress {
  bar(label: string, total: number, format?: string): ProgressBar;
  log(line: string): void;
  stop(): void;
}
