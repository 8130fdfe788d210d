// Charts as inline SVG built element by element (no library, no markup strings). Every bar and
// point carries its value (data-value) and a <title> with its date and value.

import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const H = 220;

// The drawing's width in SVG units: narrower on a phone, so its text stays readable there.
function drawingWidth() {
  return document.documentElement.clientWidth < 720 ? 360 : 640;
}
const PAD = { left: 52, right: 10, top: 12, bottom: 30 };

function svg(tag, attrs, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) element.setAttribute(name, String(value));
  for (const child of children) {
    if (child !== null && child !== undefined) element.append(child);
  }
  return element;
}

function titled(element, text) {
  element.append(svg("title", {}, text));
  return element;
}

// A round top for the axis: 1, 2 or 5 times a power of ten.
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

// An axis label: short (1.5k, 2M; money with at most 4 significant digits).
export function compact(value) {
  const size = Math.abs(value);
  if (size >= 1e6) return `${+(value / 1e6).toPrecision(3)}M`;
  if (size >= 1e3) return `${+(value / 1e3).toPrecision(3)}k`;
  return String(+Number(value).toPrecision(3));
}

function frame(W, label, max, format) {
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  });
  const plotH = H - PAD.top - PAD.bottom;
  for (const fraction of [0, 0.5, 1]) {
    const y = PAD.top + plotH * (1 - fraction);
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
    root.append(
      svg("text", { x: PAD.left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, format(max * fraction)),
    );
  }
  return root;
}

function xLabels(W, root, labels, step) {
  const every = Math.max(1, Math.ceil(labels.length / (W < 640 ? 5 : 7)));
  labels.forEach((text, i) => {
    if (i % every !== 0 && i !== labels.length - 1) return;
    const x = PAD.left + step * (i + 0.5);
    root.append(svg("text", { x, y: H - 10, class: "axis", "text-anchor": "middle" }, text.slice(5)));
  });
}

function legend(series) {
  if (series.length < 2) return null;
  return h(
    "ul",
    { class: "legend" },
    series.map((s, i) => h("li", {}, h("span", { class: `swatch s${i}`, "aria-hidden": "true" }), s.label)),
  );
}

// Bars per day; several series are stacked (e.g. input and output tokens).
export function bars(title, labels, series, format = String, axis = compact) {
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const total = totals.reduce((a, b) => a + b, 0);
  const W = drawingWidth();
  const root = frame(W, `${title}: ${format(total)} in ${labels.length} days`, max, axis);
  root.dataset.total = String(total);
  const plotH = H - PAD.top - PAD.bottom;
  const step = (W - PAD.left - PAD.right) / Math.max(1, labels.length);
  const width = Math.max(1, step * 0.7);
  labels.forEach((date, i) => {
    let base = PAD.top + plotH;
    series.forEach((s, k) => {
      const value = s.values[i] || 0;
      const height = (value / max) * plotH;
      base -= height;
      const rect = svg("rect", {
        x: PAD.left + step * i + (step - width) / 2,
        y: base,
        width,
        height: Math.max(0, height),
        class: `bar s${k}`,
        "data-date": date,
        "data-value": value,
      });
      root.append(titled(rect, `${date} — ${s.label}: ${format(value)}`));
    });
  });
  xLabels(W, root, labels, step);
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), root, legend(series));
}

// Lines per day (e.g. latency p50 and p95).
export function lines(title, labels, series, format = String, axis = compact) {
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null))));
  const W = drawingWidth();
  const root = frame(W, title, max, axis);
  const plotH = H - PAD.top - PAD.bottom;
  const step = (W - PAD.left - PAD.right) / Math.max(1, labels.length);
  series.forEach((s, k) => {
    // A day without a value (null: nothing happened) has no point: the line joins the others.
    const points = s.values
      .map((value, i) => [PAD.left + step * (i + 0.5), PAD.top + plotH * (1 - (value || 0) / max), i, value])
      .filter((p) => p[3] !== null && p[3] !== undefined);
    root.append(svg("polyline", { points: points.map((p) => `${p[0]},${p[1]}`).join(" "), class: `line s${k}` }));
    points.forEach(([x, y, i, value]) => {
      const dot = svg("circle", { cx: x, cy: y, r: 3, class: `dot s${k}`, "data-date": labels[i], "data-value": value });
      root.append(titled(dot, `${labels[i]} — ${s.label}: ${format(value)}`));
    });
  });
  xLabels(W, root, labels, step);
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), root, legend(series));
}

// Horizontal bars, one per row (by model, by key, by reason).
export function ranking(title, rows, format = String) {
  const rowH = 26;
  const height = Math.max(1, rows.length) * rowH + 8;
  const max = niceMax(Math.max(0, ...rows.map((r) => r.value)));
  const W = drawingWidth();
  const labelW = Math.round(W * 0.3);
  const root = svg("svg", { viewBox: `0 0 ${W} ${height}`, class: "chart", role: "img", "aria-label": title });
  rows.forEach((row, i) => {
    const y = 4 + i * rowH;
    const barW = ((W - labelW - 90) * row.value) / max;
    root.append(svg("text", { x: labelW - 8, y: y + 16, class: "axis", "text-anchor": "end" }, row.label.slice(0, W < 640 ? 16 : 28)));
    const rect = svg("rect", { x: labelW, y: y + 4, width: Math.max(0, barW), height: rowH - 10, class: "bar s0", "data-value": row.value });
    root.append(titled(rect, `${row.label}: ${format(row.value)}`));
    root.append(svg("text", { x: labelW + barW + 6, y: y + 16, class: "axis" }, format(row.value)));
  });
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), root);
}
