/*
 * dcim live dashboard: browser side (plain ES2020, no dependencies).
 *
 * Listens on GET /api/events (Server-Sent Events): the server pushes the /api/state document
 * on connect and whenever the live state or the alarms change. If the stream fails
 * repeatedly it falls back to polling GET /api/state every 2 s (and tries the stream again
 * every minute); the header says which ("live", "reconnecting…", "polling"). The PUE trend
 * comes from GET /api/trend?point=pue_live&hours=6 every 60 s. Each section of index.html
 * is rendered by one small function. Data only ever enters the page through textContent
 * and attributes (createElement), never through innerHTML.
 * Missing numbers render as "–"; times are on the site's clock (Asia/Hong_Kong unless
 * the document names another zone in site.timezone), named by site.tz_abbrev and
 * site.utc_offset_min ("HKT (UTC+8)"); the header's site clock and alarm ages tick every
 * second. The power chain is drawn by chain.js.
 *
 * Alarm actions POST JSON to /api/alarms/{action}; the change comes back on the stream (when
 * polling, the page refreshes at once). "history" lists an alarm's journal from
 * GET /api/alarms/history. GET /api/me first says who the page is signed in as: with
 * sign-in, the journal names that user, every POST carries the session's CSRF token in
 * X-CSRF-Token, actions the role may not take are not offered, and a 401 goes back to
 * /login. Without sign-in (loopback only) the page sends the operator's typed name
 * (remembered in localStorage).
 */
'use strict';

const STATE_URL = '/api/state';
const ME_URL = '/api/me';
const LOGIN_URL = '/login';
const EVENTS_URL = '/api/events';
const HAS_EVENT_SOURCE = typeof EventSource === 'function';
const STREAM_FAILURES_BEFORE_POLLING = 3;
const STREAM_RETRY_MS = 60000;
const TREND_URL = '/api/trend?point=pue_live&hours=6';
const STATE_EVERY_MS = 2000;
const TREND_EVERY_MS = 60000;
const FETCH_TIMEOUT_MS = 5000;
const DASH = '\u2013';
const SVG_NS = 'http://www.w3.org/2000/svg';
const SEVERITY_RANK = {critical: 0, major: 1, minor: 2, warning: 3};
const PRIORITIES = ['critical', 'high', 'medium', 'low']; // most urgent first
const BAND_TEXT = {
  recommended: 'recommended',
  allowable_low: 'allowable (low)',
  allowable_high: 'allowable (high)',
  out_low: 'OUT OF RANGE (low)',
  out_high: 'OUT OF RANGE (high)',
  unknown: 'unknown',
};

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

function list(v) {
  return Array.isArray(v) ? v : [];
}

function noNegZero(s) {
  // "-0", "-0.0", "-0.00" -> without the sign
  return /^-0(\.0+)?$/.test(s) ? s.slice(1) : s;
}

/** 4123.4 -> "4,123"; null -> "–". */
function fmtInt(v) {
  return isNum(v) ? noNegZero(v.toLocaleString('en-US', {maximumFractionDigits: 0})) : DASH;
}

/**
 * Fixed decimals: fmtFixed(1.4123, 2) -> "1.41". Like toFixed (the exact binary value is
 * rounded) except that exact ties go to the even digit, as Python's format(x, ".2f") does,
 * so the page and the server print the same digits.
 */
function fmtFixed(v, digits) {
  if (!isNum(v)) return DASH;
  let out = v.toFixed(digits);
  const exact = Math.abs(v).toFixed(Math.min(100, digits + 25));
  const rest = exact.slice(exact.indexOf('.') + 1 + digits);
  if (/^50*$/.test(rest) && Number(out[out.length - 1]) % 2 === 1) {
    // toFixed rounded the tie away from zero onto an odd digit: step back to the even one
    out = (Math.sign(v) * (Math.abs(Number(out)) - 10 ** -digits)).toFixed(digits);
  }
  return noNegZero(out);
}

function fmtKw(v) {
  return isNum(v) ? `${fmtInt(v)} kW` : DASH;
}

/** A fraction as a percentage with at most one decimal: 0.99 -> "99%", 0.949 -> "94.9%". */
function fmtPct(fraction) {
  if (!isNum(fraction)) return DASH;
  const pct = Math.round(fraction * 1000) / 10;
  return `${noNegZero(pct.toFixed(1)).replace(/\.0$/, '')}%`;
}

/** A value of unknown type for tables (numbers up to 2 decimals). */
function fmtValue(v) {
  if (isNum(v)) return noNegZero(v.toLocaleString('en-US', {maximumFractionDigits: 2}));
  if (v === null || v === undefined || v === '') return DASH;
  return String(v);
}

function pad2(n) {
  return String(n).padStart(2, '0');
}

const DEFAULT_TIMEZONE = 'Asia/Hong_Kong'; // the reference site's, until /api/state names one
let siteTimezone = DEFAULT_TIMEZONE;
let siteZone = {abbrev: null, offsetMin: null}; // from the newest document (zoneinfo on the server)
const zoneFormats = new Map();

/** An Intl formatter on the site's clock (null if the browser does not know the zone). */
function zoneFormat(kind, options) {
  const key = `${siteTimezone}|${kind}`;
  if (!zoneFormats.has(key)) {
    let format = null;
    try {
      format = new Intl.DateTimeFormat('en-GB', {timeZone: siteTimezone, ...options});
    } catch (err) {
      console.warn(`dcim dashboard: unknown time zone ${siteTimezone}, using the browser's`, err);
    }
    zoneFormats.set(key, format);
  }
  return zoneFormats.get(key);
}

function partsOf(format, ms) {
  return Object.fromEntries(format.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
}

/** Year..second of an instant on the site's clock (the browser's own if the zone is unknown). */
function timeParts(ms) {
  const format = zoneFormat('numeric', {hourCycle: 'h23', year: 'numeric', month: '2-digit',
    day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit'});
  if (format) {
    const p = partsOf(format, ms);
    return {date: `${p.year}-${p.month}-${p.day}`, hm: `${p.hour}:${p.minute}`, s: p.second};
  }
  const d = new Date(ms);
  return {date: `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`,
    hm: `${pad2(d.getHours())}:${pad2(d.getMinutes())}`, s: pad2(d.getSeconds())};
}

/** Epoch ms -> "Mon 7 Dec 2026" on the site's clock. */
function fmtLongDate(ms) {
  if (!isNum(ms)) return DASH;
  const format = zoneFormat('long', {weekday: 'short', day: 'numeric', month: 'short', year: 'numeric'});
  if (!format) return new Date(ms).toDateString();
  const p = partsOf(format, ms);
  return `${p.weekday} ${p.day} ${p.month} ${p.year}`;
}

/** Minutes east of UTC -> "UTC+8", "UTC+5:30", "UTC-4", "UTC". */
function fmtOffset(minutes) {
  if (!isNum(minutes)) return null;
  if (minutes === 0) return 'UTC';
  const m = Math.abs(minutes);
  return `UTC${minutes < 0 ? '-' : '+'}${Math.floor(m / 60)}${m % 60 ? `:${pad2(m % 60)}` : ''}`;
}

/** The site's zone as the page names it: "HKT (UTC+8)", else the IANA name and offset. */
function zoneText() {
  const offset = fmtOffset(siteZone.offsetMin);
  const name = siteZone.abbrev || siteTimezone;
  if (!offset || name === offset) return name;
  return `${name} (${offset})`;
}

/** Epoch ms -> "HH:MM:SS" (or "HH:MM" without seconds) on the site's clock. */
function fmtClock(ms, withSeconds = true) {
  if (!isNum(ms)) return DASH;
  const t = timeParts(ms);
  return withSeconds ? `${t.hm}:${t.s}` : t.hm;
}

/** Epoch ms -> "YYYY-MM-DD HH:MM:SS" on the site's clock. */
function fmtDateTime(ms) {
  if (!isNum(ms)) return DASH;
  const t = timeParts(ms);
  return `${t.date} ${t.hm}:${t.s}`;
}

/** Seconds -> "45 s", "12 min", "3 h 05 min", "2 d 4 h". */
function fmtAge(seconds) {
  if (!isNum(seconds) || seconds < 0) return DASH;
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${pad2(m % 60)} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function humanType(t) {
  return t === null || t === undefined ? '' : String(t).replace(/_/g, ' ');
}

function text(v) {
  return v === null || v === undefined || v === '' ? DASH : String(v);
}

/**
 * createElement with attributes and children. Attribute values and string children
 * are inserted as text; keys: "class", "text", "dataset" (object), anything else
 * becomes an attribute. null / undefined / false values are skipped.
 */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) {
        if (v !== null && v !== undefined) node.dataset[k] = String(v);
      }
    } else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}, textValue = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (textValue !== null) node.textContent = textValue;
  return node;
}

function setText(id, value) {
  const node = $(id);
  if (node) node.textContent = value;
  return node;
}

/** Tri-state for data attributes: true -> "true", false -> "false", else "unknown". */
function triState(v) {
  return v === true ? 'true' : v === false ? 'false' : 'unknown';
}

/** A load bar: kw / capacity, with a level for styling (text is given alongside). */
function loadBar(kw, capacity) {
  const frac = isNum(kw) && isNum(capacity) && capacity > 0 ? kw / capacity : null;
  const level = frac === null ? 'none' : frac > 1 ? 'over' : frac >= 0.8 ? 'high' : 'ok';
  const fill = el('div', {class: 'bar-fill'});
  fill.style.width = frac === null ? '0%' : `${Math.max(0, Math.min(1, frac)) * 100}%`;
  return {frac, level, bar: el('div', {class: 'bar', dataset: {level}, 'aria-hidden': 'true'}, fill)};
}

/** A row spanning the whole table, for "nothing here" messages. */
function emptyRow(columns, message) {
  return el('tr', {class: 'empty'}, el('td', {colspan: columns, text: message}));
}

/**
 * fetch + JSON with a timeout; throws on network errors, timeouts and non-2xx (with the
 * server's {"error": ...} text when it sent one).
 */
async function requestJson(url, init = {}, timeoutMs = FETCH_TIMEOUT_MS) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch(url, {
      cache: 'no-store',
      ...init,
      signal: controller.signal,
      headers: {Accept: 'application/json', ...(init.headers || {})},
    });
    if (!response.ok) {
      let detail = null;
      try {
        const doc = await response.json();
        if (doc && typeof doc.error === 'string') detail = doc.error;
      } catch (err) {
        detail = null; // not JSON: the status says enough
      }
      if (response.status === 401 && me.auth) window.location.assign(LOGIN_URL); // signed out
      const error = new Error(detail || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return await response.json();
  } catch (err) {
    if (err && err.name === 'AbortError') throw new Error(`no answer in ${timeoutMs / 1000} s`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

function fetchJson(url, timeoutMs = FETCH_TIMEOUT_MS) {
  return requestJson(url, {}, timeoutMs);
}

/** POST a JSON body (application/json: the server refuses anything else), with the CSRF token. */
function postJson(url, body) {
  const headers = {'Content-Type': 'application/json'};
  if (me.csrf_token) headers['X-CSRF-Token'] = me.csrf_token;
  return requestJson(url, {method: 'POST', headers, body: JSON.stringify(body)});
}

// ---------------------------------------------------------------- who is signed in

// GET /api/me; until it answers (or if it cannot), the page behaves as without sign-in
let me = {auth: false, user: null, role: null, csrf_token: null, permissions: null};

/** Whether the signed-in role may take an action (everything when the server has not said). */
function can(action) {
  return !Array.isArray(me.permissions) || me.permissions.includes(action);
}

async function loadMe() {
  try {
    me = {...me, ...(await fetchJson(ME_URL))};
  } catch (err) {
    if (err && err.status === 401) {
      window.location.assign(LOGIN_URL);
      return false;
    }
    console.warn('dcim dashboard: /api/me failed; acting as without sign-in', err);
  }
  document.body.dataset.role = me.role || '';
  $('signed-in').hidden = !me.auth;
  $('operator-field').hidden = !!me.auth;
  setText('who-name', me.user || DASH);
  setText('who-role', me.role || '');
  return true;
}

async function signOut() {
  try {
    await postJson('/api/logout', {});
  } catch (err) {
    console.warn('dcim dashboard: sign-out failed', err);
  }
  window.location.assign(LOGIN_URL);
}

// ---------------------------------------------------------------- header and tiles

/** The site's clock in the header: date, time and zone, ticking with the server's clock. */
function updateSiteClock() {
  const now = isNum(lastDataMs) ? serverNowMs() : null;
  const clock = $('site-clock');
  setText('site-date', fmtLongDate(now));
  setText('site-time', fmtClock(now));
  setText('site-zone', isNum(now) ? zoneText() : DASH);
  $('site-zone').title = `time zone ${siteTimezone}`;
  if (isNum(now)) clock.setAttribute('datetime', new Date(now).toISOString());
}

function renderHeader(site, headline) {
  const name = site && site.name ? String(site.name) : DASH;
  setText('site-name', name);
  const clock = setText('data-time', fmtClock(site ? site.time_ms : null));
  if (clock && site && isNum(site.time_ms)) {
    clock.setAttribute('datetime', new Date(site.time_ms).toISOString());
    clock.title = `${fmtDateTime(site.time_ms)} ${zoneText()}`;
  }
  updateSiteClock();
  for (const note of document.querySelectorAll('.zone-note')) note.textContent = zoneText();
  const outdoor = headline ? headline.outdoor_c : null;
  setText('outdoor-c', isNum(outdoor) ? `${fmtFixed(outdoor, 1)} °C` : DASH);
  document.title = name === DASH ? 'dcim – live' : `${name} – dcim`;
}

/** One PUE figure: [display text, explanation or null]. */
function pueText(pue) {
  if (!pue) return [DASH, null];
  if (isNum(pue.value)) return [fmtFixed(pue.value, 2), null];
  return ['withheld', pue.reason ? String(pue.reason) : 'no reason given'];
}

function renderPueTile(h) {
  const tile = $('tile-pue');
  const pue = h ? h.pue : null;
  const [value, reason] = pueText(pue);
  setText('pue-value', value);

  const meta = [];
  if (pue && pue.category) meta.push(String(pue.category));
  if (pue && isNum(pue.coverage)) meta.push(`${fmtPct(pue.coverage)} coverage`);
  setText('pue-meta', meta.join(' · '));

  const reasonNode = $('pue-reason');
  reasonNode.textContent = reason || '';
  reasonNode.hidden = !reason;
  tile.dataset.withheld = reason ? 'true' : 'false';
  tile.dataset.state = reason ? 'warn' : value === DASH ? 'unknown' : 'ok';
  if (reason) tile.title = `Live PUE withheld: ${reason}`;
  else tile.removeAttribute('title');

  const [today, todayReason] = pueText(h ? h.pue_today : null);
  const todayNode = setText('pue-today', today);
  if (todayReason) todayNode.title = `PUE today withheld: ${todayReason}`;
  else todayNode.removeAttribute('title');
  setText('ppue-cooling', fmtFixed(h ? h.ppue_cooling : null, 2));
  setText('ppue-distribution', fmtFixed(h ? h.ppue_distribution : null, 2));
}

function renderLoadTiles(h) {
  const it = h ? h.it_kw : null;
  const facility = h ? h.facility_kw : null;
  setText('it-kw', fmtKw(it));
  setText('facility-kw', fmtKw(facility));
  $('tile-it').dataset.state = isNum(it) ? 'ok' : 'unknown';
  $('tile-facility').dataset.state = isNum(facility) ? 'ok' : 'unknown';
}

function renderDevicesTile(c) {
  const tile = $('tile-devices');
  if (!c || !isNum(c.devices) || !isNum(c.up)) {
    setText('devices-up', DASH);
    setText('devices-detail', '');
    tile.dataset.state = 'unknown';
    return;
  }
  setText('devices-up', `${fmtInt(c.up)} / ${fmtInt(c.devices)} up`);
  setText('devices-detail', `${fmtInt(c.stale)} stale · ${fmtInt(c.down)} down`);
  tile.dataset.state = c.down > 0 ? 'bad' : c.stale > 0 || c.up < c.devices ? 'warn' : 'ok';
}

/** Shown on the page and paged for: announced and not normal (a pending alarm is normal). */
function isLive(a) {
  return a.announced !== false && a.state !== 'normal';
}

function isUnacked(a) {
  return a.state === 'active_unacknowledged' || a.state === 'returned_unacknowledged';
}

function renderAlarmTile(alarms, counts) {
  const tile = $('tile-alarms');
  const c = counts || {};
  const live = alarms.filter(isLive);
  const shown = isNum(c.shown) ? c.shown : live.length;
  const unack = isNum(c.unacknowledged) ? c.unacknowledged : live.filter(isUnacked).length;
  setText('alarm-count', fmtInt(shown));
  const unackNode = setText('alarm-unack', unack > 0 ? `${fmtInt(unack)} unacknowledged` : '');
  unackNode.dataset.count = String(unack);
  const byPriority = c.by_priority || {};
  const parts = PRIORITIES.filter((p) => byPriority[p] > 0).map((p) => `${byPriority[p]} ${p}`);
  setText('alarm-breakdown', parts.length ? parts.join(' · ') : 'none');
  const hidden = [['shelved', c.shelved], ['suppressed', c.suppressed], ['out of service', c.out_of_service]]
    .filter(([, n]) => n > 0).map(([label, n]) => `${n} ${label}`);
  setText('alarm-hidden-summary', hidden.length ? `hidden: ${hidden.join(' · ')}` : '');
  // the worst priority still waiting for someone decides the colour
  const worst = PRIORITIES.find((p) => live.some((a) => isUnacked(a) && a.priority === p)) || 'none';
  tile.dataset.worst = worst;
  tile.dataset.state = worst === 'critical' || worst === 'high' ? 'bad' : worst === 'none' ? 'ok' : 'warn';
}

function renderRedundancyTile(r) {
  const tile = $('tile-redundancy');
  const cm = r ? r.concurrently_maintainable : null;
  const ft = r ? r.fault_tolerant : null;
  tile.dataset.cm = triState(cm);
  tile.dataset.ft = triState(ft);
  const cmNode = setText('cm-value', cm === true ? 'yes' : cm === false ? 'NO' : DASH);
  const ftNode = setText('ft-value', ft === true ? 'yes' : ft === false ? 'no' : DASH);
  cmNode.dataset.value = triState(cm);
  ftNode.dataset.value = triState(ft);
  tile.dataset.state = cm === false ? 'bad' : cm === true ? 'ok' : 'unknown';
  if (!r) {
    setText('spof-count', 'not computed yet');
    return;
  }
  const n = list(r.single_points_of_failure).length;
  setText('spof-count', n === 0 ? 'no single points of failure'
    : `${n} single point${n === 1 ? '' : 's'} of failure`);
}

function renderTiles(state) {
  const h = state.headline || null;
  renderPueTile(h);
  renderLoadTiles(h);
  renderDevicesTile(state.collection || null);
  renderAlarmTile(list(state.alarms), state.alarm_counts || null);
  renderRedundancyTile(state.redundancy || null);
}

// ---------------------------------------------------------------- power chain

function statusBadge(status) {
  if (status === 'down') return el('span', {class: 'badge badge-down', text: 'DOWN'});
  if (status === 'stale') return el('span', {class: 'badge badge-warn', text: 'STALE'});
  if (status !== 'up') return el('span', {class: 'badge badge-unknown', text: 'UNKNOWN'});
  return null;
}

// renderPowerChain: chain.js (laid out by the topology)

// ---------------------------------------------------------------- cooling

function renderCoolingUnit(u) {
  const running = u.running === true ? 'running' : u.running === false ? 'stopped' : DASH;
  const sub = [humanType(u.type), u.name && u.name !== u.id ? String(u.name) : null].filter(Boolean);
  const title = [
    u.name && u.name !== u.id ? `${u.name} (${text(u.id)})` : text(u.id),
    humanType(u.type), fmtKw(u.kw), running === DASH ? 'run state unknown' : running,
    `status: ${text(u.status)}`,
  ].join('\n');
  return el('div', {class: 'unit', title,
    dataset: {id: u.id, status: u.status || 'unknown', type: u.type, running: triState(u.running)}},
  el('div', {class: 'node-head'}, el('span', {class: 'node-id', text: text(u.id)}), statusBadge(u.status)),
  el('div', {class: 'node-sub', text: sub.join(' · ')}),
  el('div', {class: 'node-load'},
    el('span', {class: 'node-kw', text: fmtKw(u.kw)}),
    el('span', {class: 'run-state', dataset: {running: triState(u.running)}, text: running})));
}

function renderCooling(units) {
  const container = $('cooling-units');
  if (!units.length) container.replaceChildren(el('p', {class: 'empty', text: 'No cooling data'}));
  else container.replaceChildren(...units.map(renderCoolingUnit));
}

// ---------------------------------------------------------------- racks

function renderLegend(ashrae) {
  const legend = $('rack-legend');
  const rec = ashrae ? list(ashrae.recommended_c) : [];
  const all = ashrae ? list(ashrae.allowable_c) : [];
  const range = (r) => (r.length === 2 ? `${fmtValue(r[0])}–${fmtValue(r[1])} °C` : DASH);
  const swatch = (band, label) => el('span', {class: 'legend-item'},
    el('span', {class: 'swatch rack', dataset: {band}, 'aria-hidden': 'true'}), label);
  legend.replaceChildren(
    el('span', {class: 'legend-class'}, 'ASHRAE ', el('b', {id: 'ashrae-class', text: text(ashrae ? ashrae['class'] : null)})),
    swatch('recommended', `recommended ${range(rec)}`),
    swatch('allowable_high', `allowable ${range(all)}`),
    swatch('out_high', 'out of range'),
    swatch('unknown', 'no reading'),
    el('span', {class: 'legend-item'},
      el('span', {class: 'swatch rack q-degraded', dataset: {band: 'recommended'}, 'aria-hidden': 'true'}),
      'stale / bad data'));
}

function rackFeedMap(redundancy) {
  const feed = new Map();
  if (!redundancy) return feed;
  for (const id of list(redundancy.one_feed_racks)) feed.set(id, 'one-feed');
  for (const id of list(redundancy.dropped_racks)) feed.set(id, 'dropped');
  return feed;
}

function renderRack(r, feed) {
  const band = BAND_TEXT[r.band] ? r.band : 'unknown';
  const quality = r.quality || 'missing';
  const feedState = feed.get(r.id) || null;
  const title = [
    text(r.id),
    `inlet ${isNum(r.inlet_c) ? `${fmtFixed(r.inlet_c, 1)} °C` : DASH} – ${BAND_TEXT[band]}`,
    `power ${fmtFixed(r.kw, 1)} of ${fmtFixed(r.design_kw, 1)} kW design`,
    `data quality: ${quality}`,
    feedState === 'dropped' ? 'POWER: both feeds lost' : feedState === 'one-feed' ? 'power: on one feed only' : null,
  ].filter(Boolean).join('\n');
  const classes = ['rack'];
  if (quality !== 'good') classes.push('q-degraded');
  const load = el('span', {class: 'rack-load', 'aria-hidden': 'true'});
  if (isNum(r.kw) && isNum(r.design_kw) && r.design_kw > 0) {
    load.style.width = `${Math.max(0, Math.min(1, r.kw / r.design_kw)) * 100}%`;
  }
  return el('div', {class: classes.join(' '), title,
    dataset: {id: r.id, band, quality, feed: feedState}},
  isNum(r.inlet_c) ? fmtFixed(r.inlet_c, 1) : DASH, load);
}

function naturalCompare(a, b) {
  return String(a).localeCompare(String(b), 'en', {numeric: true});
}

function renderRacks(racks, ashrae, redundancy) {
  renderLegend(ashrae);
  const feed = rackFeedMap(redundancy);
  const halls = new Map();
  for (const r of racks) {
    const hall = r.hall ?? DASH;
    const row = r.row ?? DASH;
    if (!halls.has(hall)) halls.set(hall, new Map());
    const rows = halls.get(hall);
    if (!rows.has(row)) rows.set(row, []);
    rows.get(row).push(r);
  }
  const sections = [...halls.keys()].sort(naturalCompare).map((hall) => {
    const rows = halls.get(hall);
    const all = [...rows.values()].flat();
    const temps = all.map((r) => r.inlet_c).filter(isNum);
    const out = all.filter((r) => r.band === 'out_low' || r.band === 'out_high').length;
    const summary = [
      `${all.length} racks`,
      temps.length ? `max ${fmtFixed(Math.max(...temps), 1)} °C` : null,
      out ? `${out} out of range` : null,
    ].filter(Boolean).join(' · ');
    const rowNodes = [...rows.keys()].sort(naturalCompare).map((row) => {
      const tiles = rows.get(row)
        .slice()
        .sort((a, b) => (isNum(a.index) ? a.index : 0) - (isNum(b.index) ? b.index : 0))
        .map((r) => renderRack(r, feed));
      return el('div', {class: 'rack-row', dataset: {row}}, el('span', {class: 'row-label', text: String(row)}), tiles);
    });
    return el('section', {class: 'hall', dataset: {hall, out}},
      el('h3', {}, String(hall), el('span', {class: 'h-note', text: summary})),
      rowNodes);
  });
  const container = $('halls');
  if (!sections.length) container.replaceChildren(el('p', {class: 'empty', text: 'No rack data'}));
  else container.replaceChildren(...sections);
}

// ---------------------------------------------------------------- redundancy

function renderGroupRow(g) {
  const meets = triState(g.meets_design);
  const load = `${fmtInt(g.load_kw)} / ${fmtKw(g.capacity_kw)}`;
  const frac = isNum(g.load_kw) && isNum(g.capacity_kw) && g.capacity_kw > 0 ? g.load_kw / g.capacity_kw : null;
  return el('tr', {dataset: {group: g.id, meets}},
    el('td', {class: 'strong', text: text(g.id)}),
    el('td', {text: humanType(g.kind) || DASH}),
    el('td', {text: text(g.design)}),
    el('td', {class: 'level', text: text(g.level)}),
    el('td', {class: 'num', text: fmtInt(g.needed)}),
    el('td', {class: 'num', text: `${fmtInt(g.available)} / ${fmtInt(g.installed)}`}),
    el('td', {class: 'num', text: frac === null ? load : `${load} (${fmtPct(frac)})`}),
    el('td', {class: 'meets', dataset: {meets},
      text: meets === 'true' ? 'yes' : meets === 'false' ? 'NO' : DASH}));
}

function idList(id, items) {
  return el('ul', {id, class: 'chips'}, items.map((x) => el('li', {text: String(x)})));
}

function renderRedundancy(r) {
  const rows = $('group-rows');
  const groups = r ? list(r.groups) : [];
  if (!r) rows.replaceChildren(emptyRow(8, 'Redundancy not computed yet'));
  else if (!groups.length) rows.replaceChildren(emptyRow(8, 'No redundancy groups'));
  else rows.replaceChildren(...groups.map(renderGroupRow));

  const spof = r ? list(r.single_points_of_failure) : [];
  const spofList = $('spof-list');
  spofList.dataset.count = r ? String(spof.length) : 'unknown';
  if (!r) spofList.replaceChildren(el('li', {class: 'none', text: DASH}));
  else if (!spof.length) spofList.replaceChildren(el('li', {class: 'none', text: 'none'}));
  else spofList.replaceChildren(...spof.map((x) => el('li', {class: 'bad', text: String(x)})));

  const extra = [];
  const sections = [
    ['dropped-racks', 'Racks with no power (both feeds lost)', r ? list(r.dropped_racks) : []],
    ['one-feed-racks', 'Racks on one feed', r ? list(r.one_feed_racks) : []],
    ['short-halls', 'Halls short of cooling', r ? list(r.short_halls) : []],
  ];
  for (const [id, title, items] of sections) {
    if (items.length) extra.push(el('h3', {text: `${title} (${items.length})`}), idList(id, items));
  }
  $('rack-feed-issues').replaceChildren(...extra);
}

// ---------------------------------------------------------------- alarms

const ALARM_ACTION_URL = '/api/alarms/';
const HISTORY_URL = '/api/alarms/history';
const HISTORY_HOURS = 168; // the longest the server allows
const OPERATOR_KEY = 'dcim.operator';
const STATE_TEXT = {
  active_unacknowledged: 'UNACK',
  active_acknowledged: 'acknowledged',
  returned_unacknowledged: 'returned, unack',
  normal: 'normal',
};
const ACTION_TEXT = {
  ack: 'Ack',
  reset: 'Reset',
  shelve: 'Shelve…',
  unshelve: 'Unshelve',
  out_of_service: 'Out of service…',
  return_to_service: 'Return to service',
};
const ACTION_DONE = {
  ack: 'Acknowledged', reset: 'Reset', shelve: 'Shelved', unshelve: 'Unshelved',
  out_of_service: 'Took out of service', return_to_service: 'Returned to service',
};
// These need a reason (the server refuses them without): they open the form first.
const NEEDS_REASON = {shelve: 'Shelve', out_of_service: 'Take out of service'};
// How long, in minutes: the choices offered, up to what the role may ask for.
const DURATIONS = {
  shelve: [[15, '15 min'], [60, '1 h'], [240, '4 h'], [720, '12 h']],
  out_of_service: [[60, '1 h'], [240, '4 h'], [720, '12 h'], [1440, '1 day'], [10080, '7 days']],
};
const DEFAULT_MINUTES = 60;

/** Fill the duration list for an action; false when the action takes no duration. */
function fillMinutes(action) {
  const choices = DURATIONS[action];
  if (!choices) return false;
  const max = action === 'shelve' ? me.shelve_max_minutes : me.out_of_service_max_minutes;
  let allowed = choices.filter(([minutes]) => !isNum(max) || minutes <= max);
  if (!allowed.length) allowed = [[max, `${fmtValue(max)} min`]];
  const chosen = allowed.some(([minutes]) => minutes === DEFAULT_MINUTES) ? DEFAULT_MINUTES : allowed[0][0];
  $('action-minutes').replaceChildren(...allowed.map(([minutes, label]) =>
    el('option', {value: minutes, text: label, selected: minutes === chosen})));
  return true;
}

let alarmsById = new Map(); // the alarms of the last /api/state
let alarmsKey = null; // what the tables were last drawn from, ages aside
let actionBusy = false;
let historyAlarm = null;
let historyRequests = 0;

function alarmFlags(a) {
  const flags = [];
  const flag = (kind, value, title = null) => el('li', {class: 'flag', dataset: {flag: kind}, text: value, title});
  if (a.acked_by) {
    flags.push(flag('acked', `acked by ${a.acked_by}${isNum(a.acked_ms) ? ` ${fmtClock(a.acked_ms)}` : ''}`,
      isNum(a.acked_ms) ? fmtDateTime(a.acked_ms) : null));
  }
  if (isNum(a.shelved_until_ms)) {
    flags.push(flag('shelved', `shelved by ${text(a.shelved_by)} until ${fmtClock(a.shelved_until_ms, false)}`
      + `${a.shelve_reason ? `: ${a.shelve_reason}` : ''}`, `until ${fmtDateTime(a.shelved_until_ms)}`));
  }
  if (a.suppressed_by) flags.push(flag('suppressed', `suppressed: ${a.suppressed_by}`));
  if (a.out_of_service_by) flags.push(flag('out-of-service', `out of service (${a.out_of_service_by})`));
  if (a.latched && !a.condition && a.state !== 'normal') flags.push(flag('latched', 'cleared, latched: reset it'));
  return flags.length ? el('ul', {class: 'flags'}, flags) : DASH;
}

function alarmRow(a) {
  const where = [a.unit, a.device && a.device !== a.unit ? a.device : null].filter(Boolean).join(' · ');
  // listeners on the buttons themselves: a click on a row a refresh just replaced still acts
  const buttons = list(a.actions).filter((action) => ACTION_TEXT[action] && can(action)).map((action) => {
    const button = el('button', {type: 'button', class: `act act-${action}`, dataset: {action, alarm: a.id},
      text: ACTION_TEXT[action]});
    button.addEventListener('click', () => onAlarmAction(action, a));
    return button;
  });
  let history = null;
  if (can('alarm_history')) {
    history = el('button', {type: 'button', class: 'link-button', dataset: {history: a.id}, text: 'history'});
    history.addEventListener('click', () => showHistory(a.id));
  }
  return el('tr', {class: isUnacked(a) ? 'alarm unacked' : 'alarm',
    dataset: {id: a.id, priority: a.priority, state: a.state, source: a.source, announced: a.announced !== false}},
  el('td', {class: 'prio', text: text(a.priority)}),
  el('td', {class: 'state', title: humanType(a.state), text: STATE_TEXT[a.state] || text(a.state)}),
  el('td', {class: 'msg'}, el('div', {class: 'alarm-msg', text: text(a.message)}),
    where ? el('div', {class: 'alarm-where', text: where}) : null),
  el('td', {class: 'time'}, el('div', {class: 'since', text: fmtClock(a.since_ms), title: fmtDateTime(a.since_ms)}),
    el('div', {class: 'age', text: ageText(a)})),
  el('td', {class: 'flags-cell'}, alarmFlags(a)),
  el('td', {class: 'actions'}, buttons, history));
}

/** "12 min ago": from when it became active to the server's clock now (ticks every second). */
function ageText(a) {
  const age = isNum(a.since_ms) ? Math.max(0, (serverNowMs() - a.since_ms) / 1000) : a.age_s;
  return isNum(age) ? `${fmtAge(age)} ago` : '';
}

function updateAlarmAges() {
  for (const row of document.querySelectorAll('#alarms tr.alarm')) {
    const a = alarmsById.get(row.dataset.id);
    const age = row.querySelector('.age');
    if (a && age) age.textContent = ageText(a);
  }
}

function renderAlarms(alarms) {
  alarmsById = new Map(alarms.map((a) => [a.id, a]));
  // Redraw only when something but the ages changed: a redraw on every push would eat
  // clicks that straddle it and the keyboard focus.
  const key = JSON.stringify([siteTimezone, alarms.map((a) => ({...a, age_s: null}))]);
  if (key === alarmsKey) {
    updateAlarmAges();
    return;
  }
  alarmsKey = key;
  const live = alarms.filter(isLive);
  const hidden = alarms.filter((a) => a.announced === false);
  const rows = $('alarm-rows');
  if (!live.length) rows.replaceChildren(emptyRow(6, 'No active alarms'));
  else rows.replaceChildren(...live.map(alarmRow));
  setText('alarm-hidden-count', String(hidden.length));
  $('alarms-hidden').dataset.count = String(hidden.length);
  const hiddenRows = $('alarm-hidden-rows');
  if (!hidden.length) hiddenRows.replaceChildren(emptyRow(6, 'None'));
  else hiddenRows.replaceChildren(...hidden.map(alarmRow));
  syncActionForm();
}

function renderAnomalies(anomalies) {
  setText('anomaly-count', String(anomalies.length));
  $('anomalies').dataset.count = String(anomalies.length);
  const sorted = anomalies.slice().sort((a, b) =>
    (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9)
    || (isNum(b.since_ms) ? b.since_ms : 0) - (isNum(a.since_ms) ? a.since_ms : 0));
  const items = sorted.map((a) => el('li', {class: 'episode', dataset: {severity: a.severity, kind: a.kind, device: a.device}},
    el('span', {class: 'sev', text: text(a.severity)}),
    el('span', {class: 'time', text: fmtClock(a.since_ms), title: fmtDateTime(a.since_ms)}),
    el('span', {class: 'strong', text: `${text(a.device)} / ${text(a.point)}`}),
    el('span', {class: 'msg', text: text(a.message)}),
    isNum(a.value) ? el('span', {class: 'num', text: fmtValue(a.value)}) : null));
  $('anomaly-list').replaceChildren(...(items.length ? items : [el('li', {class: 'none', text: 'no open episodes'})]));
}

// -- operator actions

function operatorName() {
  return $('operator').value.trim();
}

function showActionMessage(message, kind = 'info') {
  const node = $('alarm-action-msg');
  node.textContent = message || '';
  node.dataset.kind = kind;
  node.hidden = !message;
}

function needOperator() {
  if (me.auth || operatorName()) return false; // signed in: the server knows the name
  showActionMessage('Type your name in "Operator" first: every alarm action is journaled with it.', 'error');
  $('operator').focus();
  return true;
}

function onAlarmAction(action, alarm) {
  if (needOperator()) return;
  if (NEEDS_REASON[action]) {
    openActionForm(action, alarm);
    return;
  }
  const comment = $('action-comment');
  sendAction(action, alarm.id, {comment: comment.value.trim()}).then((ok) => {
    if (ok) comment.value = '';
  });
}

function openActionForm(action, alarm) {
  const form = $('alarm-action');
  form.dataset.action = action;
  form.dataset.alarm = alarm.id;
  setText('action-title', `${NEEDS_REASON[action]}: ${alarm.message || alarm.id}`);
  $('action-minutes-field').hidden = !fillMinutes(action);
  $('action-submit').textContent = NEEDS_REASON[action];
  $('action-reason').value = '';
  form.hidden = false;
  showActionMessage('');
  $('action-reason').focus();
}

function closeActionForm() {
  const form = $('alarm-action');
  form.hidden = true;
  delete form.dataset.action;
  delete form.dataset.alarm;
}

/** Close the form when its alarm went away or the action no longer applies. */
function syncActionForm() {
  const form = $('alarm-action');
  const {action, alarm} = form.dataset;
  if (form.hidden || !action) return;
  const a = alarmsById.get(alarm);
  if (!a || !list(a.actions).includes(action)) {
    closeActionForm();
    // a refusal the server just gave says more: keep it
    if ($('alarm-action-msg').dataset.kind !== 'error') {
      showActionMessage(`${alarm} changed meanwhile: "${humanType(action)}" no longer applies.`, 'error');
    }
  }
}

async function submitActionForm(event) {
  event.preventDefault();
  const form = $('alarm-action');
  const {action, alarm} = form.dataset;
  if (!action || !alarm || needOperator()) return;
  const reason = $('action-reason').value.trim();
  if (!reason) {
    showActionMessage(`${NEEDS_REASON[action]} needs a reason: it is kept in the journal.`, 'error');
    $('action-reason').focus();
    return;
  }
  const body = {reason};
  if (DURATIONS[action]) body.minutes = Number($('action-minutes').value);
  if (await sendAction(action, alarm, body)) closeActionForm();
}

/** POST one action; true when the server took it. The page refreshes at once either way. */
async function sendAction(action, alarmId, extra) {
  if (actionBusy) return false;
  actionBusy = true;
  $('alarms').dataset.busy = 'true';
  showActionMessage(`${humanType(action)} ${alarmId}: sending…`);
  try {
    const body = me.auth ? {alarm_id: alarmId, ...extra} : {alarm_id: alarmId, user: operatorName(), ...extra};
    const result = await postJson(ALARM_ACTION_URL + encodeURIComponent(action), body);
    showActionMessage(`${ACTION_DONE[action] || action} ${alarmId}: now ${STATE_TEXT[result.state] || text(result.state)}`
      + ` (journal #${text(result.seq)}).`, 'ok');
    return true;
  } catch (err) {
    showActionMessage(`${humanType(action)} ${alarmId} failed: ${err && err.message ? err.message : err}`, 'error');
    return false;
  } finally {
    actionBusy = false;
    $('alarms').dataset.busy = 'false';
    refreshState();
    if (historyAlarm === alarmId) showHistory(alarmId);
  }
}

// -- journal

function eventRow(e) {
  return el('tr', {class: 'event', dataset: {seq: e.seq, action: e.action, user: e.user, announced: e.announced}},
    el('td', {class: 'time', text: fmtDateTime(e.time_ms)}),
    el('td', {class: 'strong', text: humanType(e.action) || DASH}),
    el('td', {text: STATE_TEXT[e.state] || text(e.state)}),
    el('td', {text: text(e.user)}),
    el('td', {class: 'msg', text: text(e.comment)}));
}

async function showHistory(alarmId) {
  historyAlarm = alarmId;
  const request = ++historyRequests;
  const box = $('alarm-history');
  box.hidden = false;
  box.dataset.alarm = alarmId;
  box.dataset.loaded = 'false';
  setText('history-title', `Journal of ${alarmId}, last ${HISTORY_HOURS / 24} days`);
  let rows;
  try {
    const doc = await fetchJson(`${HISTORY_URL}?hours=${HISTORY_HOURS}&alarm_id=${encodeURIComponent(alarmId)}`);
    const events = list(doc && doc.events).slice().reverse(); // newest first
    rows = events.length ? events.map(eventRow) : [emptyRow(5, 'No journal entries')];
  } catch (err) {
    rows = [emptyRow(5, `Journal unavailable: ${err && err.message ? err.message : err}`)];
  }
  if (request !== historyRequests) return; // another alarm's journal was asked for meanwhile
  $('history-rows').replaceChildren(...rows);
  box.dataset.loaded = 'true';
}

function closeHistory() {
  historyAlarm = null;
  historyRequests += 1;
  $('alarm-history').hidden = true;
}

function setUpAlarmControls() {
  const operator = $('operator');
  try {
    // a name typed while the page was still asking /api/me is kept, and remembered
    if (operator.value.trim()) localStorage.setItem(OPERATOR_KEY, operator.value.trim());
    else operator.value = localStorage.getItem(OPERATOR_KEY) || '';
  } catch (err) {
    console.warn('dcim dashboard: no localStorage, the operator name is not remembered', err);
  }
  operator.addEventListener('input', () => {
    try {
      localStorage.setItem(OPERATOR_KEY, operator.value.trim());
    } catch (err) {
      // not remembered; the action still carries the name
    }
    if (operator.value.trim() && $('alarm-action-msg').dataset.kind === 'error') showActionMessage('');
  });
  $('alarm-action').addEventListener('submit', submitActionForm);
  $('action-cancel').addEventListener('click', () => {
    closeActionForm();
    showActionMessage('');
  });
  $('history-close').addEventListener('click', closeHistory);
  $('sign-out').addEventListener('click', signOut);
}

// ---------------------------------------------------------------- devices

function renderDevicesNotUp(devices) {
  const rows = $('device-rows');
  if (!devices.length) {
    rows.replaceChildren(emptyRow(5, 'All devices up'));
    return;
  }
  const rank = (d) => (d.status === 'down' ? 0 : d.status === 'stale' ? 1 : 2);
  const sorted = devices.slice().sort((a, b) => rank(a) - rank(b) || naturalCompare(a.id, b.id));
  rows.replaceChildren(...sorted.map((d) => el('tr', {dataset: {id: d.id, status: d.status}},
    el('td', {class: 'strong', text: text(d.id)}),
    el('td', {text: humanType(d.type) || DASH}),
    el('td', {class: 'status', dataset: {status: d.status}, text: text(d.status)}),
    el('td', {text: text(d.gateway)}),
    el('td', {class: 'msg', text: text(d.last_error)}))));
}

function renderCollection(c) {
  const stat = (id, value, warn) => {
    const node = setText(id, value);
    node.dataset.warn = warn ? 'true' : 'false';
  };
  stat('polls-per-s', fmtFixed(c ? c.polls_per_s : null, 1), false);
  stat('collect-errors', fmtInt(c ? c.errors : null), c && c.errors > 0);
  stat('missed-cycles', fmtInt(c ? c.missed_cycles : null), c && c.missed_cycles > 0);
  stat('stored', fmtInt(c ? c.stored : null), false);
  stat('buffered', fmtInt(c ? c.buffered : null), c && c.buffered > 0);
}

// ---------------------------------------------------------------- PUE trend

let lastTrend = null;

function trendPoints(data) {
  return list(data && data.points)
    .filter((p) => Array.isArray(p) && isNum(p[0]))
    .map((p) => [p[0], isNum(p[1]) ? p[1] : null])
    .sort((a, b) => a[0] - b[0]);
}

function renderTrend(data) {
  lastTrend = data;
  const box = $('pue-trend');
  const points = trendPoints(data);
  if (!points.length) {
    box.replaceChildren(el('p', {class: 'empty', text: 'no history yet'}));
    return;
  }
  const W = Math.max(280, Math.floor(box.clientWidth || 600));
  const H = 190;
  const m = {left: 52, right: 14, top: 14, bottom: 26};
  const values = points.map((p) => p[1]).filter((v) => v !== null);
  const t0 = points[0][0];
  const t1 = points[points.length - 1][0];
  const vMin = values.length ? Math.min(...values) : null;
  const vMax = values.length ? Math.max(...values) : null;
  let lo = vMin ?? 0;
  let hi = vMax ?? 1;
  if (hi - lo < 0.02) { lo -= 0.01; hi += 0.01; }
  const x = (t) => (t1 === t0 ? (m.left + W - m.right) / 2 : m.left + ((t - t0) / (t1 - t0)) * (W - m.left - m.right));
  const y = (v) => m.top + (1 - (v - lo) / (hi - lo)) * (H - m.top - m.bottom);

  const root = svg('svg', {
    width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'trend',
    'aria-label': `PUE over the last 6 hours: min ${fmtFixed(vMin, 2)}, max ${fmtFixed(vMax, 2)}`,
  });
  // axes and guide lines at the min and max
  root.append(svg('line', {class: 'axis', x1: m.left, y1: H - m.bottom, x2: W - m.right, y2: H - m.bottom}));
  root.append(svg('line', {class: 'axis', x1: m.left, y1: m.top, x2: m.left, y2: H - m.bottom}));
  if (vMin !== null) {
    for (const v of vMax === vMin ? [vMin] : [vMin, vMax]) {
      root.append(svg('line', {class: 'guide', x1: m.left, y1: y(v), x2: W - m.right, y2: y(v)}));
    }
  }

  // the line: a new subpath after every null (and after a jump of more than 2 intervals)
  const every = isNum(data.every_s) && data.every_s > 0 ? data.every_s * 1000 : null;
  let d = '';
  let run = [];
  const flush = () => {
    if (run.length === 1) {
      root.append(svg('circle', {class: 'dot', cx: x(run[0][0]).toFixed(1), cy: y(run[0][1]).toFixed(1), r: 2.5}));
    } else if (run.length > 1) {
      d += run.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    }
    run = [];
  };
  let prevT = null;
  for (const [t, v] of points) {
    if (v === null || (every && prevT !== null && t - prevT > 2 * every)) flush();
    if (v !== null) run.push([t, v]);
    prevT = t;
  }
  flush();
  if (d) root.append(svg('path', {class: 'line', d}));

  // labels: y min/max, x start/end time
  const yMaxPos = vMax !== null ? y(vMax) : m.top;
  const yMinPos = vMin !== null ? y(vMin) : H - m.bottom;
  root.append(svg('text', {class: 'label y-max', x: m.left - 6, y: yMaxPos, 'text-anchor': 'end', 'dominant-baseline': 'middle'}, fmtFixed(vMax, 2)));
  if (vMin !== vMax) {
    root.append(svg('text', {class: 'label y-min', x: m.left - 6, y: yMinPos, 'text-anchor': 'end', 'dominant-baseline': 'middle'}, fmtFixed(vMin, 2)));
  }
  root.append(svg('text', {class: 'label x-start', x: m.left, y: H - 6, 'text-anchor': 'start'}, fmtClock(t0, false)));
  root.append(svg('text', {class: 'label x-end', x: W - m.right, y: H - 6, 'text-anchor': 'end'}, fmtClock(t1, false)));
  if (!values.length) {
    root.append(svg('text', {class: 'label no-values', x: (m.left + W - m.right) / 2, y: H / 2, 'text-anchor': 'middle'}, 'no values in this window'));
  }
  box.replaceChildren(root);
}

// ---------------------------------------------------------------- the live feed

let lastDataMs = null; // data time of the last document shown
let clockSkewMs = 0; // the server's clock minus this browser's, from the newest document
let feedMode = 'starting'; // starting | live | reconnecting | polling | lost
let stream = null; // the EventSource while one is open
let streamFailures = 0; // errors in a row without a document
let polling = false;
let pollTimer = null;
let streamRetryAt = 0;

const FEED_TEXT = {
  starting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  polling: `polling every ${STATE_EVERY_MS / 1000} s`,
  lost: 'offline',
};

/** The indicator in the header, the banner and the dimming of stale data. */
function setFeed(mode, err) {
  feedMode = mode;
  const badge = $('conn-state');
  badge.dataset.mode = mode;
  badge.textContent = FEED_TEXT[mode] || mode;
  const ok = mode === 'live' || mode === 'polling';
  document.body.dataset.conn = ok ? 'ok' : mode === 'starting' ? 'starting' : 'lost';
  const banner = $('conn-banner');
  if (ok || mode === 'starting') {
    banner.hidden = true;
    banner.textContent = '';
    return;
  }
  const reason = err && err.message ? err.message : 'no answer';
  const since = isNum(lastDataMs) ? ` Showing data as of ${fmtClock(lastDataMs)}.` : '';
  banner.textContent = mode === 'reconnecting'
    ? `Live updates interrupted: reconnecting.${since}`
    : `Connection lost (${reason}): retrying every ${STATE_EVERY_MS / 1000} s.${since}`;
  banner.hidden = false;
}

/** The site's offset from UTC as the browser's time zone data gives it (older servers). */
function browserOffsetMin(ms) {
  const format = isNum(ms) ? zoneFormat('offset', {timeZoneName: 'shortOffset'}) : null;
  if (!format) return null;
  const m = /GMT(?:([+-])(\d+)(?::(\d+))?)?/.exec(partsOf(format, ms).timeZoneName || '');
  if (!m) return null;
  if (!m[1]) return 0;
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3] || 0));
}

/** The server's clock now, as far as the newest document tells. */
function serverNowMs() {
  return Date.now() + clockSkewMs;
}

function renderState(state) {
  const s = state || {};
  const zone = s.site ? s.site.timezone : null;
  siteTimezone = typeof zone === 'string' && zone ? zone : DEFAULT_TIMEZONE;
  siteZone = {abbrev: s.site && typeof s.site.tz_abbrev === 'string' ? s.site.tz_abbrev : null,
    offsetMin: s.site && isNum(s.site.utc_offset_min) ? s.site.utc_offset_min : null};
  if (siteZone.offsetMin === null) siteZone.offsetMin = browserOffsetMin(s.site ? s.site.time_ms : null);
  const sections = [
    ['header', () => renderHeader(s.site || null, s.headline || null)],
    ['tiles', () => renderTiles(s)],
    ['power chain', () => renderPowerChain(list(s.power_chain))],
    ['cooling', () => renderCooling(list(s.cooling))],
    ['racks', () => renderRacks(list(s.racks), s.ashrae || null, s.redundancy || null)],
    ['redundancy', () => renderRedundancy(s.redundancy || null)],
    ['alarms', () => renderAlarms(list(s.alarms))],
    ['anomalies', () => renderAnomalies(list(s.anomalies))],
    ['devices not up', () => renderDevicesNotUp(list(s.devices_not_up))],
    ['collection', () => renderCollection(s.collection || null)],
  ];
  // one bad section must not blank the others
  for (const [name, render] of sections) {
    try {
      render();
    } catch (err) {
      console.error(`dcim dashboard: rendering ${name} failed`, err);
    }
  }
}

function showDocument(state) {
  lastDataMs = state && state.site && isNum(state.site.time_ms) ? state.site.time_ms : null;
  if (lastDataMs !== null) clockSkewMs = lastDataMs - Date.now();
  renderState(state);
}

// Polled answers are numbered so that an older one never overwrites a newer one (an action's
// refresh can overtake a poll already on its way); a pushed document outranks them all.
let stateRequests = 0;
let stateShown = 0;

async function loadState() {
  const request = ++stateRequests;
  let state;
  try {
    // no-cache: the browser revalidates with the ETag and the server answers 304 if unchanged
    state = await requestJson(STATE_URL, {cache: 'no-cache'});
  } catch (err) {
    if (request < stateShown) return;
    throw err;
  }
  if (request < stateShown) return;
  stateShown = request;
  showDocument(state);
}

/**
 * Listen on /api/events: the server pushes the document on connect and on every change.
 * The browser reconnects by itself after an error; after STREAM_FAILURES_BEFORE_POLLING
 * errors in a row (or when it gives up) the page polls /api/state instead, and tries the
 * stream again every STREAM_RETRY_MS.
 */
function startStream() {
  const source = new EventSource(EVENTS_URL);
  stream = source;
  source.addEventListener('state', (event) => {
    if (stream !== source) return;
    let state;
    try {
      state = JSON.parse(event.data);
    } catch (err) {
      console.error('dcim dashboard: a pushed document is not JSON', err);
      return;
    }
    streamFailures = 0;
    stopPolling();
    stateShown = ++stateRequests;
    setFeed('live');
    showDocument(state);
  });
  source.addEventListener('error', () => {
    if (stream !== source) return;
    streamFailures += 1;
    if (source.readyState === EventSource.CLOSED || streamFailures >= STREAM_FAILURES_BEFORE_POLLING) {
      source.close();
      stream = null;
      startPolling();
    } else if (!polling) {
      setFeed('reconnecting');
    }
  });
}

function startPolling() {
  if (polling) return;
  polling = true;
  streamRetryAt = Date.now() + STREAM_RETRY_MS;
  pollState();
}

function stopPolling() {
  polling = false;
  clearTimeout(pollTimer);
  pollTimer = null;
}

async function pollState() {
  pollTimer = null;
  try {
    await loadState();
    if (polling) setFeed('polling');
  } catch (err) {
    if (polling) setFeed('lost', err);
  }
  if (!polling) return;
  if (stream === null && HAS_EVENT_SOURCE && Date.now() >= streamRetryAt) {
    streamRetryAt = Date.now() + STREAM_RETRY_MS;
    startStream(); // polling goes on until the stream delivers
  }
  pollTimer = setTimeout(pollState, STATE_EVERY_MS);
}

/** Refresh now (after an operator action) unless the stream will push the change. */
function refreshState() {
  if (feedMode === 'live') return;
  loadState().catch((err) => setFeed('lost', err));
}

async function pollTrend() {
  try {
    renderTrend(await fetchJson(TREND_URL));
  } catch (err) {
    console.warn('dcim dashboard: trend fetch failed', err);
    if (lastTrend === null) $('pue-trend').replaceChildren(el('p', {class: 'empty', text: 'trend unavailable, retrying'}));
  } finally {
    setTimeout(pollTrend, TREND_EVERY_MS);
  }
}

// redraw the chart when its box changes width (window resize, layout settling)
let trendWidth = 0;
new ResizeObserver((entries) => {
  const width = Math.floor(entries[0].contentRect.width);
  if (Math.abs(width - trendWidth) < 4) return;
  trendWidth = width;
  if (lastTrend) renderTrend(lastTrend);
}).observe($('pue-trend'));

async function start() {
  if (!(await loadMe())) return; // on its way to the sign-in page
  setUpAlarmControls();
  setInterval(() => {
    updateAlarmAges();
    updateSiteClock();
  }, 1000);
  if (HAS_EVENT_SOURCE) startStream();
  else startPolling();
  pollTrend();
}

start();
