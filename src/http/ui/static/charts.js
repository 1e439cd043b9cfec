// Small line charts as inline SVG, built with DOM calls (no library, no markup strings).
// Each chart carries its latest value in words (figcaption) and an accessible name, so the
// numbers are readable without the picture.
"use strict";

window.Charts = (function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 132, H = 34, PAD = 2;

  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  // The points of one series as an SVG polyline, scaled to `max`; gaps (null) break the line.
  function lines(values, max, cls) {
    const out = [];
    let run = [];
    const step = values.length > 1 ? (W - 2 * PAD) / (values.length - 1) : 0;
    values.forEach((v, i) => {
      if (v === null || v === undefined) {
        if (run.length) out.push(run);
        run = [];
        return;
      }
      const x = PAD + i * step;
      const y = H - PAD - (max > 0 ? (v / max) * (H - 2 * PAD) : 0);
      run.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    if (run.length) out.push(run);
    return out.map((pts) => svg("polyline", { points: pts.length === 1 ? pts[0] + " " + pts[0] : pts.join(" "), class: cls }));
  }

  // A chart of one or two series (`series`: [{values, label}]), captioned with `caption`.
  function chart(title, series, caption) {
    const fig = document.createElement("figure");
    fig.className = "chart";
    const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
    const max = all.length ? Math.max(...all) : 0;
    const root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    const label = title + ": " + caption;
    root.setAttribute("aria-label", label);
    const t = svg("title");
    t.textContent = label;
    root.appendChild(t);
    series.forEach((s, i) => lines(s.values, max, i === 0 ? "line" : "line second").forEach((l) => root.appendChild(l)));
    fig.appendChild(root);
    const cap = document.createElement("figcaption");
    cap.textContent = caption;
    fig.appendChild(cap);
    return fig;
  }

  function last(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
    return null;
  }

  function seconds(v) {
    if (v === null) return "–";
    return v < 1 ? (v * 1000).toFixed(v < 0.001 ? 2 : 1) + " ms" : v.toFixed(2) + " s";
  }

  // The three charts of an upstream's traffic (points from /ui/api: t, rate, error_rate, p50, p99).
  function traffic(points) {
    const pts = points || [];
    const calls = pts.map((p) => p.rate);
    const errors = pts.map((p) => (p.rate > 0 ? p.error_rate : null));
    const p50 = pts.map((p) => p.p50);
    const p99 = pts.map((p) => p.p99);
    const total = pts.reduce((n, p) => n + p.rate * 10, 0);
    const failed = pts.reduce((n, p) => n + p.rate * 10 * p.error_rate, 0);
    const avg = pts.length ? total / (pts.length * 10) : 0;
    return {
      calls: chart("Calls per second, last 15 minutes", [{ values: calls }], avg.toFixed(2) + " calls/s (" + Math.round(total) + " calls)"),
      errors: chart("Error rate, last 15 minutes", [{ values: errors }], total > 0 ? ((100 * failed) / total).toFixed(1) + "% errors" : "no calls"),
      latency: chart("Latency p50 (solid) and p99 (dashed), last 15 minutes", [{ values: p50 }, { values: p99 }], "p50 " + seconds(last(p50)) + " · p99 " + seconds(last(p99))),
    };
  }

  return { chart, traffic };
})();
