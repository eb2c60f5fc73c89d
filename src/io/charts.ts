// Pictures (training loss, expert load), drawn with vega-lite to SVG and rendered to PNG with resvg; both are written
// (atomically), the SVG scales, the PNG opens anywhere.
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { writeFileAtomic } from './atomic.js';

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
