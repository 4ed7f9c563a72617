/**
 * A time-series chart drawn by uPlot. The canvas is hidden from assistive technology: the figure's
 * caption (count, period, lowest and highest) and the table of readings are its text alternative.
 */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { SeriesDef } from './observations.js';

// Line styles differ as well as colours, so two lines are told apart without colour.
const STROKES = ['#1a4fa0', '#a00', '#1d6b2f', '#7a4b00'];
const DASHES: Array<number[] | undefined> = [undefined, [6, 4], [2, 3], [10, 3, 2, 3]];

export function TimeChart({ xs, series, values }: { xs: number[]; series: SeriesDef[]; values: Array<Array<number | null>> }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el || xs.length === 0) return;
    const width = () => Math.max(200, el.clientWidth);
    const height = () => (el.clientWidth < 500 ? 200 : 260);
    const opts: uPlot.Options = {
      width: width(), height: height(),
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label, stroke: STROKES[i % STROKES.length]!, width: 2, spanGaps: true,
          ...(DASHES[i % DASHES.length] ? { dash: DASHES[i % DASHES.length]! } : {}),
          points: { show: xs.length <= 120 },
          value: (_u: uPlot, v: number | null) => (v === null ? '–' : `${v} ${s.unit}`),
        })),
      ],
      // A little room above and below the readings; uPlot's own range for flat data runs from 0.
      scales: { y: { range: (_u: uPlot, min: number, max: number) => { const pad = Math.max(1, (max - min) * 0.1); return [min - pad, max + pad]; } } },
      axes: [{}, { size: 50 }],
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
    };
    const plot = new uPlot(opts, [xs, ...values] as uPlot.AlignedData, el);
    const ro = new ResizeObserver(() => plot.setSize({ width: width(), height: height() }));
    ro.observe(el);
    return () => { ro.disconnect(); plot.destroy(); };
  }, [xs, series, values]);
  return <div class="chart" ref={box} aria-hidden="true" />;
}
