// Pictures of results, drawn with vega-lite to SVG and rendered to PNG with resvg; both are written
// (atomically), the SVG scales, the PNG opens anywhere.
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { writeFileAtomic } from '../io/atomic.js';

export type ChartSpec = vl.TopLevelSpec;

/** Renders `spec` to `<base>.svg` and `<base>.png`; returns the paths written. */
export async function writeChart(spec: ChartSpec, base: string): Promise<string[]> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  writeFileAtomic(`${base}.svg`, svg);
  const png = new Resvg(svg, {
    background: 'white',
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
    fitTo: { mode: 'zoom', value: 2 },
  })
    .render()
    .asPng();
  writeFileAtomic(`${base}.png`, png);
  return [`${base}.svg`, `${base}.png`];
}

export interface LossPoint {
  adapter: string;
  step: number;
  loss: number;
  aux: number | null;
}

/** Training loss per optimizer step for each adapter, and the load-balance loss below when there is one. */
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
