// The station page: a snapshot, then batches of updates, over
// Server-Sent Events from the daemon itself. Reconnects by itself; while it
// is not connected the page says so in words, so a stale screen is never
// mistaken for a live one. Text from boards is only ever set as text.
'use strict';

const WORDS = {
  idle: ['○', 'IDLE'],
  running: ['◔', 'RUNNING'],
  waiting: ['⏸', 'WAITING'],
  passed: ['✔', 'PASSED'],
  failed: ['✖', 'FAILED'],
  collected: ['◆', 'COLLECTED'],
  interrupted: ['■', 'INTERRUPTED'],
};

const page = {
  tiles: new Map(),      // port -> tile
  failures: [],
  counters: null,
  steps: 0,
  offset: 0,             // server clock minus ours, ms
  shift: null,           // work order, lot, operator, product of the next board
  required: [],
  sinks: [],             // each [[sink]]'s backlog
};

// As the daemon's log and STATUS judge it (sink::health::BEHIND_AFTER).
const SINK_BEHIND_MS = 60000;

const SHIFT_FIELDS = ['work_order', 'lot', 'operator', 'product'];

let source = null;
let retry = null;

function serverNow() { return Date.now() + page.offset; }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function shortPort(port) {
  const parts = port.split('/');
  return parts[parts.length - 1] || port;
}

function seconds(ms) {
  if (ms === null || ms === undefined) return '';
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return s.toFixed(1) + ' s';
  const m = Math.floor(s / 60);
  return m + ' min ' + Math.floor(s % 60) + ' s';
}

function ago(ms) {
  const s = Math.max(0, Math.round((serverNow() - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  return Math.floor(s / 3600) + ' h ago';
}

function clock(ms) {
  return new Date(ms - page.offset).toLocaleTimeString([], { hour12: false });
}

// The words usually start with the check's name already ("signature (…)").
function reasonText(code, words) {
  if (code && words) return words.startsWith(code) ? words : code + ': ' + words;
  return code || words || '';
}

function renderTile(tile) {
  const b = tile.board || {};
  const node = el('article', 'tile');
  node.dataset.port = tile.port;
  node.dataset.state = tile.state;
  node.title = tile.port;
  node.appendChild(el('div', 'port', tile.fixture ? tile.fixture + ' · ' + shortPort(tile.port) : shortPort(tile.port)));
  const [symbol, word] = WORDS[tile.state] || ['?', tile.state.toUpperCase()];
  node.appendChild(el('div', 'state', symbol + ' ' + word));
  if (tile.state === 'running') {
    const step = el('div', 'step', b.step ? b.step : 'board found');
    if (b.step && page.steps) step.textContent += '  (' + b.steps_begun + '/' + page.steps + ')';
    node.appendChild(step);
    const elapsed = el('div', 'elapsed');
    elapsed.dataset.since = b.arrived_ms || b.step_started_ms || serverNow();
    node.appendChild(elapsed);
    if (page.steps) {
      const bar = el('div', 'bar');
      const fill = el('span');
      fill.style.width = Math.min(100, 100 * Math.max(0, b.steps_begun - 1) / page.steps) + '%';
      bar.appendChild(fill);
      node.appendChild(bar);
    }
  } else if (tile.state === 'waiting') {
    node.appendChild(el('div', 'reason', b.waiting || 'waiting'));
  } else if (tile.state === 'idle') {
    if (b.outcome) {
      const last = el('div', 'last', 'empty · last board ' + b.outcome.toUpperCase().replace('_', ' '));
      last.dataset.ago = b.finished_ms || '';
      node.appendChild(last);
    } else {
      node.appendChild(el('div', 'last', 'empty · waiting for a board'));
    }
  } else {
    if (tile.state !== 'passed') {
      node.appendChild(el('div', 'step', b.step ? 'at ' + b.step : 'outside the plan'));
      node.appendChild(el('div', 'reason', reasonText(b.reason_code, b.reason)));
    } else if (b.duration_ms) {
      node.appendChild(el('div', 'step', 'in ' + seconds(b.duration_ms)));
    }
    if (b.work_order) node.appendChild(el('div', 'last', 'work order ' + b.work_order));
  }
  const ids = el('div', 'ids');
  if (b.imei) ids.appendChild(el('div', null, 'IMEI ' + b.imei));
  if (b.device_uuid) ids.appendChild(el('div', null, b.device_uuid));
  node.appendChild(ids);
  return node;
}

function collator() {
  return new Intl.Collator(undefined, { numeric: true });
}

function renderTiles() {
  const box = document.getElementById('tiles');
  const ports = [...page.tiles.keys()].sort(collator().compare);
  box.replaceChildren(...ports.map(p => renderTile(page.tiles.get(p))));
  if (ports.length === 0) box.appendChild(el('p', 'empty', 'No ports watched yet.'));
  tick();
}

function putTile(tile) {
  page.tiles.set(tile.port, tile);
  const box = document.getElementById('tiles');
  const fresh = renderTile(tile);
  const old = [...box.children].find(n => n.dataset && n.dataset.port === tile.port);
  if (old) {
    old.replaceWith(fresh);
    tick();
  } else {
    renderTiles();
  }
}

function renderCounters() {
  const c = page.counters;
  if (!c) return;
  document.getElementById('c-boards').textContent = c.boards_seen;
  document.getElementById('c-passed').textContent = c.passed;
  document.getElementById('c-failed').textContent = c.failed + c.interrupted;
  document.getElementById('c-collected').textContent = c.collected;
  document.getElementById('c-yield').textContent =
    c.yield_percent === null ? '–' : c.yield_percent.toFixed(1) + ' %';
  const paused = document.getElementById('paused');
  paused.hidden = !c.paused;
  paused.textContent = c.paused ? 'PAUSED: taking no new board — ' + c.paused : '';
}

function renderFailures() {
  const body = document.querySelector('#failures tbody');
  body.replaceChildren(...page.failures.map(f => {
    const row = el('tr');
    row.appendChild(el('td', 'when', clock(f.finished_ms)));
    row.appendChild(el('td', null, shortPort(f.port)));
    row.appendChild(el('td', null, f.step || '–'));
    const reason = el('td');
    reason.appendChild(el('span', 'code', f.reason_code || f.outcome));
    const words = reasonText(f.reason_code, f.reason);
    const rest = f.reason_code && words.startsWith(f.reason_code) ? words.slice(f.reason_code.length) : ' ' + words;
    if (f.reason) reason.appendChild(document.createTextNode(rest));
    row.appendChild(reason);
    row.appendChild(el('td', 'mono', f.imei || '–'));
    row.appendChild(el('td', 'mono', f.device_uuid || '–'));
    return row;
  }));
  document.getElementById('failures').hidden = page.failures.length === 0;
  document.getElementById('no-failures').hidden = page.failures.length !== 0;
}

// A sink that owes a run for longer than a minute, or holds a dead letter,
// is behind: its row says so, as the log and systemd STATUS do.
function renderSinks() {
  const body = document.querySelector('#sinks tbody');
  body.replaceChildren(...page.sinks.map(s => {
    const late = s.owed > s.dead && s.oldest_ms !== null && serverNow() - s.oldest_ms > SINK_BEHIND_MS;
    const row = el('tr', late || s.dead > 0 ? 'behind' : null);
    row.appendChild(el('td', 'mono', s.sink));
    row.appendChild(el('td', null, s.owed));
    row.appendChild(el('td', 'when', s.owed > 0 && s.oldest_ms !== null ? ago(s.oldest_ms) : '–'));
    row.appendChild(el('td', null, s.retrying));
    row.appendChild(el('td', s.dead > 0 ? 'code' : null, s.dead));
    return row;
  }));
  document.getElementById('sinks-box').hidden = page.sinks.length === 0;
}

// The form shows the values the next board runs under; a field someone is
// editing keeps what they typed until it is sent.
function renderShift() {
  if (!page.shift) return;
  for (const field of SHIFT_FIELDS) {
    const input = document.getElementById('s-' + field);
    if (!input.dataset.dirty && document.activeElement !== input) input.value = page.shift[field] || '';
    input.parentElement.classList.toggle('required', page.required.includes(field));
  }
  const missing = page.required.filter(f => !page.shift[f]);
  const waiting = document.getElementById('waiting');
  waiting.hidden = missing.length === 0;
  waiting.textContent = missing.length ? 'BOARDS WAIT: set ' + missing.map(f => f.replace('_', ' ')).join(', ') + ' below' : '';
}

async function sendShift(event) {
  event.preventDefault();
  const update = {};
  for (const field of SHIFT_FIELDS) {
    const input = document.getElementById('s-' + field);
    if (input.dataset.dirty || document.activeElement === input) update[field] = input.value.trim();
  }
  const status = document.getElementById('shift-status');
  if (Object.keys(update).length === 0) {
    status.textContent = 'nothing changed';
    return;
  }
  status.textContent = 'saving…';
  try {
    const answer = await fetch('api/v1/shift', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(update),
    });
    const body = await answer.json();
    if (!answer.ok) {
      status.dataset.state = 'error';
      status.textContent = 'NOT SAVED: ' + (body.error || answer.status);
      return;
    }
    for (const field of Object.keys(update)) delete document.getElementById('s-' + field).dataset.dirty;
    page.shift = body.shift;
    status.dataset.state = 'saved';
    status.textContent = body.changed ? 'saved for the next board' : 'no change';
    renderShift();
  } catch (e) {
    status.dataset.state = 'error';
    status.textContent = 'NOT SAVED: ' + e;
  }
}

function tick() {
  for (const node of document.querySelectorAll('.elapsed')) {
    node.textContent = seconds(serverNow() - Number(node.dataset.since));
  }
  for (const node of document.querySelectorAll('[data-ago]')) {
    if (node.dataset.ago && !node.dataset.base) node.dataset.base = node.textContent;
    if (node.dataset.ago) node.textContent = node.dataset.base + ' ' + ago(Number(node.dataset.ago));
  }
}

function onSnapshot(event) {
  const s = JSON.parse(event.data);
  page.offset = s.now_ms - Date.now();
  page.steps = s.steps_in_plan;
  page.tiles = new Map(s.tiles.map(t => [t.port, t]));
  page.failures = s.failures;
  page.counters = s.counters;
  page.shift = s.traceability;
  page.required = s.required || [];
  page.sinks = s.sinks || [];
  document.getElementById('station').textContent = s.station_id;
  document.title = s.station_id + ' · nrf-provd';
  renderTiles();
  renderCounters();
  renderFailures();
  renderShift();
  renderSinks();
  setLink('live');
}

function onUpdates(event) {
  for (const u of JSON.parse(event.data)) applyUpdate(u);
}

function applyUpdate(u) {
  page.offset = u.now_ms - Date.now();
  if (u.tile) putTile(u.tile);
  if (u.gone) {
    page.tiles.delete(u.gone);
    renderTiles();
  }
  if (u.counters) {
    page.counters = u.counters;
    renderCounters();
  }
  if (u.traceability) {
    page.shift = u.traceability;
    renderShift();
  }
  if (u.sinks) {
    page.sinks = u.sinks;
    renderSinks();
  }
  if (u.failure) {
    page.failures.unshift(u.failure);
    page.failures.length = Math.min(page.failures.length, 8);
    renderFailures();
  }
}

function setLink(state) {
  const link = document.getElementById('link');
  link.dataset.state = state;
  link.textContent = { live: 'LIVE', connecting: 'CONNECTING…', reconnecting: 'RECONNECTING…' }[state];
  document.getElementById('stale').hidden = state === 'live' || !page.counters;
  document.body.classList.toggle('stale', state !== 'live' && !!page.counters);
}

function connect() {
  clearTimeout(retry);
  source = new EventSource('events');
  source.addEventListener('snapshot', onSnapshot);
  source.addEventListener('updates', onUpdates);
  source.onerror = () => {
    setLink(page.counters ? 'reconnecting' : 'connecting');
    // The browser retries a dropped stream by itself; one it gave up on
    // (an error answer) is opened again here.
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      retry = setTimeout(connect, 2000);
    }
  };
}

document.addEventListener('DOMContentLoaded', () => {
  const form = document.getElementById('shift');
  form.addEventListener('submit', sendShift);
  form.addEventListener('input', e => { e.target.dataset.dirty = '1'; });
  renderFailures();
  connect();
  setInterval(tick, 250);
  setInterval(renderSinks, 5000);  // the "oldest … ago" column
});
