// Charts drawn in the page with vega-lite and vega (the package's own copies, loaded by <script> tags from
// the studio: nothing comes from the network). A curve chart keeps its view and takes new points as
// changesets, so a live run's curve grows without redrawing the page.

/* eslint-disable @typescript-eslint/no-explicit-any */
declare const vega: any;
declare const vegaLite: any;

export interface Point {
  series: string;
  step: number;
  value: number;
}

const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif';
const CONFIG = {
  font: FONT,
  axis: {
    labelColor: '#4b5563',
    titleColor: '#374151',
    gridColor: '#eef0f3',
    domainColor: '#cbd2d9',
    labelFontSize: 11,
  },
  legend: {
    labelColor: '#374151',
    titleColor: '#374151',
    labelFontSize: 11,
    orient: 'bottom',
    direction: 'horizontal',
  },
  title: { color: '#111827', fontSize: 13, fontWeight: 600, anchor: 'start' },
  view: { stroke: null },
  range: { category: ['#2563eb', '#e8590c', '#059669', '#9333ea', '#dc2626', '#0891b2', '#ca8a04', '#db2777'] },
};

export class CurveChart {
  private view: any = null;
  private readonly pending: Point[] = [];
  private ready: Promise<void>;

  constructor(
    readonly el: HTMLElement,
    title: string,
    yTitle: string,
    opts: { log?: boolean; points?: boolean; zero?: boolean; format?: string; series?: string[] } = {},
  ) {
    const spec = {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title,
      width: 'container',
      height: 170,
      autosize: { type: 'fit-x', contains: 'padding' },
      data: { name: 'points' },
      mark: { type: 'line', interpolate: 'linear', strokeWidth: 1.8, point: opts.points ? { size: 18 } : false },
      encoding: {
        x: { field: 'step', type: 'quantitative', title: 'step', axis: { tickMinStep: 1, format: 'd' } },
        y: {
          field: 'value',
          type: 'quantitative',
          title: yTitle,
          scale: { zero: opts.zero ?? false, ...(opts.log ? { type: 'log' } : {}) },
          ...(opts.format ? { axis: { format: opts.format } } : {}),
        },
        // The same series keep the same colours in every chart.
        color: {
          field: 'series',
          type: 'nominal',
          title: null,
          ...(opts.series?.length ? { scale: { domain: opts.series } } : {}),
        },
        tooltip: [
          { field: 'series', type: 'nominal' },
          { field: 'step', type: 'quantitative' },
          { field: 'value', type: 'quantitative', format: '.4g' },
        ],
      },
      config: CONFIG,
    };
    const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), {
      renderer: 'svg',
      container: el,
      hover: true,
    });
    this.view = view;
    // Not run before it has points: an empty chart's bounds are infinite.
    this.ready = Promise.resolve();
  }

  /** Adds points (all of them are kept; `replace` drops the series' earlier points first). */
  add(points: Point[], replaceSeries: string[] = []): void {
    this.pending.push(...points);
    const drop = new Set(replaceSeries);
    this.ready = this.ready.then(async () => {
      const batch = this.pending.splice(0);
      const cs = vega.changeset();
      if (drop.size > 0) cs.remove((d: Point) => drop.has(d.series));
      cs.insert(batch);
      // resize(): the size is measured again with the new points (and the legend's new entries).
      await this.view.change('points', cs).resize().runAsync();
      this.el.dataset.points = String(this.count());
    });
  }

  count(): number {
    return this.view ? this.view.data('points').length : 0;
  }

  dispose(): void {
    this.view?.finalize();
    this.view = null;
  }
}

/** One heatmap per task of an adapter's expert load: share of routed slots per layer (rows) and expert. */
export function heatmap(
  el: HTMLElement,
  adapter: string,
  byTask: Record<string, Record<string, number[]>>,
  std: Record<string, number>,
): void {
  const values: { task: string; layer: number; expert: number; share: number }[] = [];
  for (const [task, layers] of Object.entries(byTask))
    for (const [layer, shares] of Object.entries(layers))
      shares.forEach((share, expert) =>
        values.push({ task: `${task} (std ${(std[task] ?? 0).toFixed(3)})`, layer: Number(layer), expert, share }),
      );
  const layers = new Set(values.map((v) => v.layer)).size;
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: `expert load: ${adapter}`, subtitle: 'share of routed token slots per layer and expert' },
    data: { values },
    facet: { column: { field: 'task', type: 'nominal', title: null, header: { labelFontSize: 11 } } },
    spec: {
      width: 150,
      height: Math.max(60, 18 * layers),
      mark: 'rect',
      encoding: {
        x: { field: 'expert', type: 'ordinal', title: 'expert' },
        y: { field: 'layer', type: 'ordinal', title: 'layer' },
        color: { field: 'share', type: 'quantitative', title: 'share', scale: { scheme: 'blues', domainMin: 0 } },
        tooltip: [
          { field: 'layer', type: 'ordinal' },
          { field: 'expert', type: 'ordinal' },
          { field: 'share', type: 'quantitative', format: '.3f' },
        ],
      },
    },
    config: { ...CONFIG, legend: { ...CONFIG.legend, orient: 'right', direction: 'vertical' } },
  };
  new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'svg', container: el, hover: true }).runAsync();
}
