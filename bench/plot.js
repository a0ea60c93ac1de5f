'use strict';
/**
 * Benchmark plots: a vega-lite spec is compiled with vega-lite, rendered to SVG by vega's
 * headless view, and rasterised to PNG by sharp. Both files are written next to each other.
 */
const fs = require('node:fs');
const path = require('node:path');
const sharp = require('sharp');

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';

let libs;
/** vega and vega-lite are ES modules: load them once, on first use. */
async function vegaLibs() {
  if (!libs) libs = Promise.all([import('vega'), import('vega-lite')]).then(([vega, vl]) => ({ vega, vl }));
  return libs;
}

/** SVG text of a vega-lite spec (white background, so the PNG is not transparent). */
async function renderSvg(spec) {
  const { vega, vl } = await vegaLibs();
  const full = { $schema: SCHEMA, background: 'white', padding: 8, ...spec };
  const view = new vega.View(vega.parse(vl.compile(full).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes `<base>.svg` and `<base>.png` (at 2× density); returns both paths. */
async function writePlot(spec, base) {
  const svg = await renderSvg(spec);
  fs.mkdirSync(path.dirname(base), { recursive: true });
  const svgFile = `${base}.svg`;
  const pngFile = `${base}.png`;
  fs.writeFileSync(svgFile, svg);
  await sharp(Buffer.from(svg), { density: 144 }).png().toFile(pngFile);
  return { svg: svgFile, png: pngFile };
}

/**
 * A line chart with points: one line per `color` value, optionally one small chart per
 * `column` / `row` value. Fields name properties of the `rows` objects.
 */
function lineSpec({ rows, x, y, color, column, row, title, xTitle, yTitle, logX = false, logY = false, width = 220, height = 160, tooltip }) {
  // Facets and legends keep the order the values first appear in the data.
  const order = (f) => [...new Set(rows.map((r) => r[f]))];
  const scale = (log) => (log ? { type: 'log', nice: false } : { zero: false });
  const enc = {
    x: { field: x, type: 'quantitative', title: xTitle ?? x, scale: scale(logX) },
    y: { field: y, type: 'quantitative', title: yTitle ?? y, scale: scale(logY) },
  };
  if (color) enc.color = { field: color, type: 'nominal', title: color, sort: order(color), legend: { labelLimit: 320 } };
  if (column) enc.column = { field: column, type: 'nominal', title: null, sort: order(column) };
  if (row) enc.row = { field: row, type: 'nominal', title: null, sort: order(row) };
  if (tooltip) enc.tooltip = tooltip.map((f) => ({ field: f }));
  return {
    title,
    data: { values: rows },
    mark: { type: 'line', point: true },
    encoding: enc,
    width,
    height,
    resolve: { scale: { y: 'independent' } },
  };
}

module.exports = { renderSvg, writePlot, lineSpec };
