// Expert load (the paper's Figure 3): for each layer, the fraction of routed token slots each expert
// received (a layer's fractions sum to 1), and their standard deviation across experts.

export interface ExpertLoad {
  /** [layer][expert] */
  fractions: number[][];
  /** Population standard deviation of each layer's fractions. */
  std: number[];
  /** Mean of the per-layer standard deviations. */
  meanStd: number;
}

export function expertLoad(counts: number[][]): ExpertLoad {
  const fractions = counts.map((layer) => {
    const total = layer.reduce((a, b) => a + b, 0);
    return layer.map((c) => (total > 0 ? c / total : 0));
  });
  const std = fractions.map((f) => {
    const mean = f.reduce((a, b) => a + b, 0) / f.length;
    return Math.sqrt(f.reduce((a, b) => a + (b - mean) ** 2, 0) / f.length);
  });
  return { fractions, std, meanStd: std.reduce((a, b) => a + b, 0) / Math.max(1, std.length) };
}
