/*
 * dcim live dashboard: the power chain, laid out by the topology (plain ES2020).
 *
 * Loaded before app.js, whose helpers (el, $, isNum, list, fmtKw, fmtPct, loadBar,
 * humanType, text, statusBadge, DASH) it uses at call time. Components stand in columns by depth from the
 * sources; inside a column they are grouped by what they belong to: a UPS system's modules
 * together under that system's name, other components by what feeds them, sources by kind.
 * Columns get extra sub-columns (tallest first) only while the whole chain still fits the
 * panel's width; when even one sub-column each does not fit, columns wrap to a new line, so
 * nothing is ever cut off. The layout is redone when the panel changes width.
 *
 * A component without a device of its own (a bus, a transformer: `monitored` false) has no
 * reading: it shows "not metered" and its state from the topology (energised from a live
 * source or not); one whose device reports state but no power shows "no kW reading".
 */
'use strict';

const CHAIN_MAX_SUB_COLUMNS = 4;

/** Module id -> the UPS system it belongs to (the ups_system that it feeds). */
function upsSystemOf(chain) {
  const of = new Map();
  for (const n of chain) {
    if (n.type !== 'ups_system') continue;
    for (const input of list(n.inputs)) of.set(input, n.id);
  }
  return of;
}

/** "A + B" for one or two feeders, "A … C (3)" for more. */
function feedersText(inputs) {
  if (inputs.length <= 2) return inputs.join(' + ');
  return `${inputs[0]} … ${inputs[inputs.length - 1]} (${inputs.length})`;
}

function plural(type) {
  const words = humanType(type);
  if (!words) return 'sources';
  return /s$/.test(words) ? words : `${words}s`;
}

/** What a component is grouped with inside its column: [key, heading, title]. */
function chainGroupOf(n, systemOf) {
  const system = systemOf.get(n.id);
  if (system !== undefined && n.type === 'ups_module') {
    return [`ups:${system}`, `${system} modules`, `the modules of UPS system ${system}`];
  }
  const inputs = list(n.inputs).map(String);
  if (!inputs.length) return [`type:${n.type}`, plural(n.type), `sources: ${plural(n.type)}`];
  return [`from:${inputs.join(',')}`, `from ${feedersText(inputs)}`, `fed from ${inputs.join(', ')}`];
}

/** Depth -> groups of components in the order the site lists them. */
function chainColumns(chain) {
  const systemOf = upsSystemOf(chain);
  const byDepth = new Map();
  for (const n of chain) {
    const depth = isNum(n.depth) ? n.depth : 0;
    if (!byDepth.has(depth)) byDepth.set(depth, new Map());
    const groups = byDepth.get(depth);
    const [key, heading, title] = chainGroupOf(n, systemOf);
    if (!groups.has(key)) groups.set(key, {key, heading, title, nodes: []});
    groups.get(key).nodes.push(n);
  }
  return [...byDepth.keys()].sort((a, b) => a - b)
    .map((depth) => ({depth, groups: [...byDepth.get(depth).values()]}));
}

/** How a component without a power reading says why, or null when it has one. */
function unmeteredKind(n) {
  if (isNum(n.kw)) return null;
  if (n.monitored === false) return 'unmetered';
  if (n.status === 'up' && n.metered === false) return 'status-only';
  return null; // a meter that is not answering: the UNKNOWN badge says so
}

function renderChainNode(n) {
  const id = text(n.id);
  const inputs = list(n.inputs);
  const {frac, level, bar} = loadBar(n.kw, n.capacity_kw);
  const kind = unmeteredKind(n);
  const energised = n.energised === false ? 'de-energised' : 'energised';
  const reading = kind === 'unmetered' ? `not metered: ${energised} (from the topology)`
    : kind === 'status-only' ? 'no kW reading: its device reports state only'
      : `${fmtKw(n.kw)} of ${fmtKw(n.capacity_kw)}${frac === null ? '' : ` (${fmtPct(frac)})`}`;
  const title = [
    n.name && n.name !== n.id ? `${n.name} (${id})` : id,
    humanType(n.type),
    reading,
    inputs.length ? `fed from ${inputs.join(', ')}` : 'source',
    `status: ${text(n.status)}${n.why ? ` (${n.why})` : ''}`,
  ].join('\n');
  const sub = [humanType(n.type), n.name && n.name !== n.id ? String(n.name) : null].filter(Boolean);
  let load;
  if (kind === 'unmetered') {
    load = el('div', {class: 'node-load'},
      el('span', {class: 'node-kw node-unmetered', dataset: {energised: String(n.energised !== false)},
        text: `\u25C7 ${energised}`}));
  } else if (kind === 'status-only') {
    load = el('div', {class: 'node-load'}, el('span', {class: 'node-kw node-status-only', text: '\u25C6 no kW'}));
  } else {
    load = el('div', {class: 'node-load'},
      el('span', {class: 'node-kw', text: isNum(n.kw) ? fmtKw(n.kw) : DASH}),
      el('span', {class: 'node-pct', text: frac === null ? '' : fmtPct(frac)}));
  }
  return el('div', {class: 'node', title, dataset: {id: n.id, status: n.status || 'unknown', type: n.type,
    load: level, metered: kind === null ? 'kw' : kind}},
  el('div', {class: 'node-head'}, el('span', {class: 'node-id', text: id}), statusBadge(n.status)),
  el('div', {class: 'node-sub', text: sub.join(' \u00B7 ')}),
  load,
  kind === null ? bar : null);
}

/** A column's height in node rows with `sub` sub-columns (a heading counts half a row). */
function columnRows(column, sub) {
  return column.groups.reduce((rows, g) => rows + Math.ceil(g.nodes.length / Math.min(sub, g.nodes.length))
    + (g.nodes.length > 1 ? 0.5 : 0), 0);
}

function renderChainColumn(column, sub) {
  const groups = column.groups.map((g) => {
    const cols = Math.min(sub, g.nodes.length);
    const body = el('div', {class: 'chain-group-body'}, g.nodes.map(renderChainNode));
    body.style.gridTemplateColumns = `repeat(${cols}, var(--node-w))`;
    const heading = g.nodes.length > 1 || g.key.startsWith('ups:')
      ? el('div', {class: 'chain-group-head', text: g.heading, title: g.title}) : null;
    return el('div', {class: 'chain-group', dataset: {chainGroup: g.key}}, heading, body);
  });
  return el('div', {class: 'chain-col', dataset: {depth: column.depth, sub}},
    el('div', {class: 'chain-col-head', text: column.depth === 0 ? 'Sources' : `Level ${column.depth}`}),
    el('div', {class: 'chain-col-body'}, groups));
}

function chainLegend() {
  const item = (cls, glyph, label, title) => el('span', {class: `legend-item ${cls}`, title},
    el('span', {class: 'legend-glyph', text: glyph}), label);
  return el('div', {class: 'legend chain-legend', id: 'chain-legend'},
    item('legend-unmetered', '\u25C7', 'not metered: no device of its own; energised or not, from the topology',
      'a bus, transformer or switchboard without a meter: the state follows what feeds it'),
    item('legend-status-only', '\u25C6', 'no kW reading: its device reports state only', 'for example a transfer switch'),
    item('legend-unknown', DASH, 'reading missing: see UNKNOWN / STALE', 'its meter is not answering: it may be fine'));
}

let chainLast = null;
let chainSubs = new Map(); // signature|width -> sub-columns per column (a layout found once is reused)

/** Do the columns sit on one line within the container? */
function chainFits(container) {
  const cols = [...container.querySelectorAll(':scope > .chain-cols > .chain-col')];
  if (!cols.length) return true;
  const top = cols[0].offsetTop;
  return cols.every((c) => c.offsetTop === top) && container.scrollWidth <= container.clientWidth + 1;
}

function drawChain(container, columns, subs) {
  const row = el('div', {class: 'chain-cols'}, columns.map((c, i) => renderChainColumn(c, subs[i])));
  container.replaceChildren(row, chainLegend());
}

/** Widen the tallest column by one sub-column while everything still fits. */
function layoutChain(container, columns) {
  const subs = columns.map(() => 1);
  drawChain(container, columns, subs);
  if (!chainFits(container)) return subs; // wrapped: more sub-columns would only wrap more
  for (let step = 0; step < columns.length * CHAIN_MAX_SUB_COLUMNS; step += 1) {
    let tallest = -1;
    for (let i = 0; i < columns.length; i += 1) {
      const wider = columnRows(columns[i], subs[i] + 1);
      if (subs[i] >= CHAIN_MAX_SUB_COLUMNS || wider >= columnRows(columns[i], subs[i])) continue;
      if (tallest < 0 || columnRows(columns[i], subs[i]) > columnRows(columns[tallest], subs[tallest])) tallest = i;
    }
    if (tallest < 0) break;
    subs[tallest] += 1;
    drawChain(container, columns, subs);
    if (!chainFits(container)) {
      subs[tallest] -= 1;
      break;
    }
  }
  drawChain(container, columns, subs);
  return subs;
}

function renderPowerChain(chain) {
  chainLast = chain;
  const container = $('chain-columns');
  if (!chain.length) {
    container.replaceChildren(el('p', {class: 'empty', text: 'No power chain data'}));
    return;
  }
  const columns = chainColumns(chain);
  // the width the ResizeObserver saw: reading clientWidth here would force a layout of the
  // whole page half-way through drawing a document
  const width = chainWidth || Math.floor(container.getBoundingClientRect().width);
  const signature = `${width}|${columns.map((c) => c.groups.map((g) => `${g.key}:${g.nodes.length}`).join(';')).join('/')}`;
  const known = chainSubs.get(signature);
  if (known) {
    drawChain(container, columns, known);
    return;
  }
  if (chainSubs.size > 20) chainSubs = new Map();
  chainSubs.set(signature, layoutChain(container, columns));
}

// lay the chain out again when its panel changes width (window resize, layout settling)
let chainWidth = 0;
new ResizeObserver((entries) => {
  const width = Math.floor(entries[0].contentRect.width);
  if (Math.abs(width - chainWidth) < 2) return;
  chainWidth = width;
  if (chainLast) renderPowerChain(chainLast);
}).observe(document.getElementById('chain-columns'));
