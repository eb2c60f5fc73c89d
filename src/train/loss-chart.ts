// The training-loss picture written beside metrics.jsonl: cross-entropy per optimizer step for each
// adapter, and the load-balance loss below it when an adapter has one.
import type { ChartSpec } from '../io/charts.js';

export interface LossPoint {
  adapter: string;
  step: number;
  loss: number;
  aux: number | null;
}

export function lossCurveSpec(points: LossPoint[], title: string): ChartSpec {
  const line = (field: string, label: string, data: object[]) => ({
    width: 520,
    height: 220,
    data: { values: data },
    mark: { type: 'line' as const, point: data.length <= 60 },
    encoding: {
      x: {
        field: 'step',
        type: 'quantitative' as const,
        title: 'optimizer step',
        axis: { tickMinStep: 1, format: 'd' },
      },
      y: { field, type: 'quantitative' as const, title: label, scale: { zero: false } },
      color: { field: 'adapter', type: 'nominal' as const },
    },
  });
  const withAux = points.filter((p) => p.aux !== null);
  const charts = [line('loss', 'cross-entropy', points)];
  if (withAux.length > 0) charts.push(line('aux', 'load-balance loss', withAux));
  return { $schema: 'https://vega.github.io/schema/vega-lite/v5.json', title, vconcat: charts } as ChartSpec;
}
