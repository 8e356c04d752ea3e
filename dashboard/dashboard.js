// The stompbox admin dashboard. Served by the admin listener (index.html at /, this
// directory at /dashboard/), it talks only to that port: STOMP over ws(s)://<host>/ws
// for the live /sys/stats snapshots (one a second), and the JSON API under /api/ for
// everything that changes the broker (described by the admin port's /openapi.json).
//
// Credentials live in one variable for the life of the page: the STOMP CONNECT
// uses them, and so does every API call as HTTP Basic. Nothing is stored.
// Text reaches the page through textContent only: destination names, logins and
// error messages are chosen by clients and must never become markup.
'use strict';

(() => {
  // The charts' window; snapshots older than this are dropped.
  const WINDOW_S = 300;
  // A silence longer than this between snapshots (a reconnect, a stalled broker)
  // breaks the chart lines instead of drawing a straight line across the gap.
  const GAP_S = 5;
  const NOTICES_KEPT = 5;
  const OK_NOTICE_MS = 8000;

  const $ = (id) => document.getElementById(id);
  // Fixed locale: the numbers read the same on every machine (and to the tests).
  const count = new Intl.NumberFormat('en-US');
  const rate = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

  let creds = null; // { login, passcode } while signed in
  let client = null;
  let mySession = null;
  let last = null; // the latest /sys/stats snapshot
  let charts = null;
  let resizers = [];
  const history = { t: [], published: [], delivered: [], open: [] };

  // For people poking at the page from the console, and for the browser test.
  const dashboard = {
    snapshots: 0,
    lastRates: null,
    lastSnapshot: null,
    session: null,
    rateHistory: () => history.t.map((t, i) => ({
      at_ms: t * 1000,
      published_per_s: history.published[i],
      delivered_per_s: history.delivered[i],
    })),
  };
  window.dashboard = dashboard;

  // --- formatting ------------------------------------------------------------

  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? count.format(v) : '–');
  const perSecond = (v) => (typeof v === 'number' && Number.isFinite(v) ? `${rate.format(v)}/s` : '–');

  function bytes(v) {
    if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return i === 0 ? `${v} B` : `${rate.format(v)} ${units[i]}`;
  }

  function duration(ms) {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return '–';
    const s = Math.floor(ms / 1000);
    const parts = [[Math.floor(s / 86400), 'd'], [Math.floor(s / 3600) % 24, 'h'], [Math.floor(s / 60) % 60, 'm'], [s % 60, 's']];
    const first = parts.findIndex(([n]) => n > 0);
    if (first < 0) return '0s';
    return parts.slice(first, first + 2).map(([n, u]) => `${n}${u}`).join(' ');
  }

  function setText(el, text) {
    // Skipping unchanged text keeps selections and the browser's layout work intact
    // across a once-a-second refresh.
    if (el.textContent !== text) el.textContent = text;
  }

  function el(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  }

  // --- status and notices ----------------------------------------------------

  function status(state, text) {
    const s = $('status');
    s.className = `status ${state}`;
    s.dataset.state = state;
    setText(s, text);
  }

  function notice(kind, text) {
    const list = $('notices');
    const item = el('li', { className: kind });
    const dismiss = el('button', { type: 'button', className: 'quiet', textContent: '×', title: 'Dismiss' });
    dismiss.addEventListener('click', () => item.remove());
    item.append(el('span', { textContent: text }), dismiss);
    list.prepend(item);
    while (list.children.length > NOTICES_KEPT) list.lastElementChild.remove();
    // Errors stay until read; confirmations go by themselves.
    if (kind === 'ok') setTimeout(() => item.remove(), OK_NOTICE_MS);
  }

  // --- the admin API ---------------------------------------------------------

  function basicAuth({ login, passcode }) {
    // btoa takes Latin-1 only; logins and passcodes may be any UTF-8.
    let latin1 = '';
    for (const b of new TextEncoder().encode(`${login}:${passcode}`)) latin1 += String.fromCharCode(b);
    return `Basic ${btoa(latin1)}`;
  }

  async function api(method, path, body) {
    const init = {
      method,
      headers: { Authorization: basicAuth(creds) },
      cache: 'no-store',
      // With credentials omitted the browser never pops up its own Basic dialog on
      // a 401: a refused login is reported by this page, in place.
      credentials: 'omit',
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      return { ok: false, status: 0, data: null, error: `no answer from the admin port (${e.message})` };
    }
    const text = await response.text().catch(() => '');
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    let error = null;
    if (!response.ok) {
      error = data && typeof data.error === 'string' ? data.error : `HTTP ${response.status}`;
      if (response.status === 401) error = `not authorized: ${error}`;
    }
    return { ok: response.ok, status: response.status, data, error };
  }

  // --- sign in and out -------------------------------------------------------

  // The libraries come from this directory's node_modules, installed with npm where
  // the broker runs; without them, say so instead of failing at the first chart.
  if (typeof StompJs === 'undefined' || typeof uPlot === 'undefined') {
    $('sign-in').disabled = true;
    setText($('login-error'),
      "The dashboard's libraries are not installed: run `npm ci --prefix dashboard` in the broker's working directory (admin.dashboard_dir).");
    return;
  }

  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const login = $('login').value;
    const passcode = $('passcode').value;
    $('sign-in').disabled = true;
    setText($('login-error'), '');
    creds = { login, passcode };
    // The API answers at once whether these are admin credentials; a STOMP CONNECT
    // would also succeed for a non-admin and only fail later at SUBSCRIBE.
    const r = await api('GET', '/api/overview');
    $('sign-in').disabled = false;
    if (!r.ok) {
      creds = null;
      setText($('login-error'), r.status === 401 ? 'Login or passcode refused (or not an admin).' : `Sign-in failed: ${r.error}`);
      return;
    }
    $('passcode').value = '';
    $('login-panel').hidden = true;
    $('app').hidden = false;
    $('sign-out').hidden = false;
    if (r.data) showOverview(r.data);
    makeCharts();
    connect();
    loadLogLevel();
  });

  $('sign-out').addEventListener('click', () => {
    const c = client;
    client = null;
    c?.deactivate();
    creds = null;
    mySession = null;
    dashboard.session = null;
    last = null;
    for (const k of Object.keys(history)) history[k].length = 0;
    destroyCharts();
    $('destinations').tBodies[0].replaceChildren();
    $('connections').tBodies[0].replaceChildren();
    $('notices').replaceChildren();
    $('app').hidden = true;
    $('sign-out').hidden = true;
    $('login-panel').hidden = false;
    setText($('broker-info'), '');
    status('offline', 'signed out');
  });

  // --- STOMP: the live snapshots ---------------------------------------------

  // Errors that retrying with the same credentials cannot fix.
  const FINAL_ERRORS = /permission denied|login|passcode|token|not authori|too many failed/i;

  function connect() {
    status('offline', 'connecting…');
    const c = new StompJs.Client({
      brokerURL: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
      connectHeaders: { login: creds.login, passcode: creds.passcode },
      reconnectDelay: 2000,
    });
    c.onConnect = (frame) => {
      if (client !== c) return; // signed out while connecting
      mySession = frame.headers.session ?? null;
      dashboard.session = mySession;
      status('online', `connected as ${creds.login}`);
      c.subscribe('/sys/stats', onStats);
    };
    c.onStompError = (frame) => {
      const message = frame.headers.message || 'ERROR without a message';
      const body = frame.body?.trim() ?? '';
      const detail = body && body !== message ? ` (${body.slice(0, 300)})` : '';
      notice('error', `broker: ${message}${detail}`);
      if (FINAL_ERRORS.test(message)) {
        // Reconnecting would only repeat the refusal (and count failed logins).
        c.deactivate();
        status('offline', `refused: ${message}`);
      }
    };
    c.onWebSocketClose = () => {
      if (client === c && c.active) status('offline', 'reconnecting…');
    };
    client = c;
    c.activate();
  }

  function onStats(message) {
    if (!creds) return;
    let snap;
    try {
      snap = JSON.parse(message.body);
    } catch {
      notice('error', 'a /sys/stats message was not JSON');
      return;
    }
    last = snap;
    dashboard.snapshots += 1;
    dashboard.lastSnapshot = snap;
    if (snap.overview) showOverview(snap.overview);
    record(snap);
    $('truncated').hidden = !snap.truncated;
    renderDestinations();
    renderConnections();
    renderSlow();
  }

  // --- overview --------------------------------------------------------------

  function showOverview(o) {
    const m = o.messages ?? {};
    const conns = o.connections ?? {};
    const by = conns.by_transport ?? {};
    setText($('published-total'), num(m.published));
    setText($('published-rate'), perSecond(o.rates?.published_per_s));
    setText($('delivered-total'), num(m.delivered));
    setText($('delivered-rate'), perSecond(o.rates?.delivered_per_s));
    setText($('connections-open'), num(conns.open));
    setText($('connections-detail'),
      `${num(conns.total)} since start · tcp ${num(by.tcp)} · ws ${num(by.ws)} · tls ${num(by.tls)} · wss ${num(by.wss)}`);
    setText($('acked-total'), `${num(m.acked)} / ${num(m.nacked)}`);
    setText($('redelivered-total'), `${num(m.redelivered)} redelivered`);
    setText($('lost-total'), `${num(m.dead_lettered)} / ${num(m.expired)} / ${num(m.dropped)}`);
    setText($('slow-events'), `${num(o.slow_consumer_events)} slow-consumer events`);
    const mem = o.memory ?? {};
    setText($('memory-used'), bytes(mem.used_bytes));
    const share = mem.high_watermark_bytes > 0 ? ` (${rate.format((100 * mem.used_bytes) / mem.high_watermark_bytes)}%)` : '';
    setText($('memory-detail'), `high watermark ${bytes(mem.high_watermark_bytes)}${share}`);
    const store = o.store ?? {};
    if (store.enabled === false) {
      setText($('store-commits'), 'off');
      setText($('store-detail'), 'in memory only');
    } else {
      setText($('store-commits'), `${num(store.commits)} commits`);
      setText($('store-detail'), `${num(store.ops)} operations`);
    }
    const l = o.listeners ?? {};
    const where = [['tcp', l.tcp], ['ws', l.ws], ['tls', l.tcp_tls], ['wss', l.wss]]
      .filter(([, a]) => a)
      .map(([k, a]) => `${k} ${a}`)
      .join(' · ');
    setText($('broker-info'), `v${o.version ?? '?'} · up ${duration(o.uptime_ms)}${where ? ` · ${where}` : ''}`);
  }

  // --- charts ----------------------------------------------------------------

  function record(snap) {
    const rates = snap.overview?.rates ?? {};
    const t = (typeof snap.at_ms === 'number' ? snap.at_ms : Date.now()) / 1000;
    const pub = Number(rates.published_per_s) || 0;
    const del = Number(rates.delivered_per_s) || 0;
    const open = Number(snap.overview?.connections?.open) || 0;
    const prev = history.t.at(-1);
    if (prev !== undefined && t <= prev) return; // a repeated or out-of-order snapshot
    if (prev !== undefined && t - prev > GAP_S) push(prev + 1, null, null, null);
    push(t, pub, del, open);
    while (history.t.length && history.t[0] < t - WINDOW_S) {
      for (const k of Object.keys(history)) history[k].shift();
    }
    dashboard.lastRates = { at_ms: t * 1000, published_per_s: pub, delivered_per_s: del };
    if (charts) feedCharts();
  }

  function feedCharts() {
    charts[0].setData([history.t, history.published, history.delivered]);
    charts[1].setData([history.t, history.open]);
    charts.forEach(showLatest);
  }

  // Without a pointer over the chart, the legend shows the newest values rather
  // than dashes.
  function showLatest(u) {
    if (u.cursor.idx == null && u.data[0].length) u.setLegend({ idx: u.data[0].length - 1 });
  }

  function push(t, pub, del, open) {
    history.t.push(t);
    history.published.push(pub);
    history.delivered.push(del);
    history.open.push(open);
  }

  function makeCharts() {
    if (charts) return;
    const axis = {
      stroke: '#8b95a3',
      grid: { stroke: '#2a303a', width: 1 },
      ticks: { stroke: '#2a303a', width: 1 },
    };
    // uPlot's default time labels carry a date line that collides with the ticks
    // over a window of minutes; a clock time is all this window needs.
    const clock = (s) => new Date(s * 1000).toLocaleTimeString('en-GB');
    const timeAxis = { ...axis, space: 70, values: (u, splits) => splits.map(clock) };
    // Always the full window, so the first minutes do not stretch across the chart.
    const x = { time: true, range: (u, min, max) => [max - WINDOW_S, max] };
    // From zero: a rate that goes from 1000 to 1010 per second is flat, not a cliff.
    const y = { range: (u, min, max) => [0, Math.max(1, max * 1.1)] };
    const value = (fmt) => (u, v) => (v == null ? '–' : fmt(v));
    const make = (target, series) => {
      const u = new uPlot({
        width: Math.max(200, target.clientWidth),
        height: 190,
        cursor: { drag: { x: false, y: false } },
        scales: { x, y },
        axes: [timeAxis, { ...axis, size: 56 }],
        series: [{ label: 'time', value: (u, v) => (v == null ? '–' : clock(v)) }, ...series],
        hooks: { setCursor: [showLatest] },
      }, [[], ...series.map(() => [])], target);
      const resizer = new ResizeObserver(() => u.setSize({ width: Math.max(200, target.clientWidth), height: 190 }));
      resizer.observe(target);
      resizers.push(resizer);
      return u;
    };
    charts = [
      make($('chart-rates'), [
        { label: 'published', stroke: '#4fa3ff', width: 2, value: value((v) => `${rate.format(v)}/s`) },
        { label: 'delivered', stroke: '#3fb56f', width: 2, value: value((v) => `${rate.format(v)}/s`) },
      ]),
      make($('chart-connections'), [
        { label: 'open', stroke: '#d29922', width: 2, value: value((v) => count.format(v)) },
      ]),
    ];
    if (history.t.length) feedCharts();
  }

  function destroyCharts() {
    resizers.forEach((r) => r.disconnect());
    resizers = [];
    charts?.forEach((u) => u.destroy());
    charts = null;
  }

  // --- tables ----------------------------------------------------------------

  // Rows are kept and updated in place, keyed by name or session, rather than
  // rebuilt every second: a button someone is about to click stays the same button.
  function syncRows(table, items, keyOf, build, update, emptyText) {
    const body = table.tBodies[0];
    const rows = new Map([...body.rows].map((tr) => [tr.dataset.key, tr]));
    let prev = null;
    for (const item of items) {
      const key = keyOf(item);
      let tr = rows.get(key);
      if (tr) rows.delete(key);
      else tr = build(key);
      update(tr, item);
      const want = prev ? prev.nextElementSibling : body.firstElementChild;
      if (tr !== want) body.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of rows.values()) tr.remove();
    const foot = table.tFoot ?? table.createTFoot();
    if (!foot.rows.length) {
      foot.insertRow().append(el('td', { colSpan: table.tHead.rows[0].cells.length, className: 'empty' }));
    }
    foot.hidden = items.length > 0;
    setText(foot.rows[0].cells[0], emptyText);
  }

  function cells(tr, n) {
    while (tr.cells.length < n) tr.insertCell();
    return tr.cells;
  }

  function matches(query, ...fields) {
    return !query || fields.some((f) => typeof f === 'string' && f.toLowerCase().includes(query));
  }

  function renderDestinations() {
    if (!last) return;
    const all = Array.isArray(last.destinations) ? last.destinations : [];
    const query = $('destination-search').value.trim().toLowerCase();
    const shown = all.filter((d) => matches(query, d.name, d.kind)).sort((a, b) => String(a.name).localeCompare(String(b.name)));
    setText($('destinations-count'), shown.length === all.length ? `${all.length}` : `${shown.length} of ${all.length}`);
    syncRows($('destinations'), shown, (d) => String(d.name), buildDestination, updateDestination,
      all.length ? 'No destination matches the search.' : 'No destinations.');
  }

  function buildDestination(name) {
    const tr = document.createElement('tr');
    tr.dataset.key = name;
    tr.dataset.name = name;
    const c = cells(tr, 11);
    for (const i of [2, 3, 4, 5, 6, 7, 8, 9]) c[i].className = 'num';
    c[0].className = 'name';
    c[10].className = 'actions';
    // Purge and delete are queue operations (the API answers 404 for anything else):
    // a topic holds nothing, and a temp queue belongs to its connection.
    const purgeButton = el('button', { type: 'button', className: 'purge-destination', textContent: 'Purge' });
    purgeButton.addEventListener('click', () => purge(name, purgeButton));
    const deleteButton = el('button', { type: 'button', className: 'delete-destination danger', textContent: 'Delete' });
    deleteButton.addEventListener('click', () => remove(name, deleteButton));
    c[10].append(purgeButton, deleteButton);
    return tr;
  }

  function updateDestination(tr, d) {
    const c = tr.cells;
    setText(c[0], d.name);
    c[0].title = d.name;
    setText(c[1], d.kind ?? '');
    setText(c[2], num(d.depth));
    setText(c[3], bytes(d.bytes));
    setText(c[4], num(d.unacked));
    setText(c[5], num(d.consumers));
    setText(c[6], num(d.published));
    setText(c[7], num(d.delivered));
    setText(c[8], rate.format(Number(d.published_per_s) || 0));
    setText(c[9], rate.format(Number(d.delivered_per_s) || 0));
    for (const b of c[10].children) b.hidden = d.kind !== 'queue';
    tr.classList.toggle('backlog', d.depth > 0 && d.consumers === 0);
  }

  async function purge(name, button) {
    if (!confirm(`Purge every message waiting in ${name}? They are deleted, not delivered.`)) return;
    button.disabled = true;
    const r = await api('POST', `/api/destinations/purge?destination=${encodeURIComponent(name)}`);
    button.disabled = false;
    if (r.ok) notice('ok', `${name}: ${num(r.data?.purged)} messages purged`);
    else notice('error', `purge ${name}: ${r.error}`);
  }

  async function remove(name, button) {
    if (!confirm(`Delete ${name} and every message in it?`)) return;
    button.disabled = true;
    const r = await api('DELETE', `/api/destinations?destination=${encodeURIComponent(name)}`);
    button.disabled = false;
    if (r.ok) notice('ok', `${name} deleted`);
    else notice('error', `delete ${name}: ${r.error}`);
  }

  function connectionsOf(snap) {
    return Array.isArray(snap?.connections) ? snap.connections : [];
  }

  function renderConnections() {
    if (!last) return;
    const all = connectionsOf(last);
    const query = $('connection-search').value.trim().toLowerCase();
    const shown = all
      .filter((c) => matches(query, c.id, c.peer, c.login ?? '', c.transport, ...(c.subscriptions ?? []).map((s) => s.destination)))
      .sort((a, b) => (a.connected_at_ms ?? 0) - (b.connected_at_ms ?? 0) || String(a.id).localeCompare(String(b.id)));
    setText($('connections-count'), shown.length === all.length ? `${all.length}` : `${shown.length} of ${all.length}`);
    syncRows($('connections'), shown, (c) => String(c.id), buildConnection, updateConnection,
      all.length ? 'No connection matches the search.' : 'No connections.');
  }

  function buildConnection(id) {
    const tr = document.createElement('tr');
    tr.dataset.key = id;
    tr.dataset.id = id;
    const c = cells(tr, 10);
    c[0].className = 'session';
    c[0].title = id;
    c[5].className = 'subs';
    c[6].className = 'num';
    c[7].className = 'num';
    c[9].className = 'actions';
    const trace = el('button', { type: 'button', className: 'trace-toggle', textContent: 'Trace' });
    trace.setAttribute('aria-pressed', 'false');
    trace.title = 'Log every frame of this connection';
    trace.addEventListener('click', () => toggleTrace(id, trace));
    const close = el('button', { type: 'button', className: 'close-connection danger', textContent: 'Close' });
    close.addEventListener('click', () => closeConnection(id, tr, close));
    c[9].append(trace, close);
    return tr;
  }

  function updateConnection(tr, conn) {
    const c = tr.cells;
    const mine = conn.id === mySession;
    setText(c[0], `${String(conn.id).slice(0, 8)}${mine ? ' (this page)' : ''}`);
    setText(c[1], conn.peer ?? '');
    setText(c[2], conn.transport ?? '');
    setText(c[3], conn.version ?? '–');
    setText(c[4], conn.login ?? 'anonymous');
    c[4].classList.toggle('muted', conn.login == null);
    const subs = conn.subscriptions ?? [];
    setText(c[5], subs.length ? `${subs.length}: ${subs.map((s) => s.destination).join(', ')}` : '0');
    c[5].title = subs.map((s) => `${s.id} → ${s.destination} (ack ${s.ack})`).join('\n');
    setText(c[6], num(conn.outbox_frames));
    setText(c[7], bytes(conn.outbox_bytes));
    setText(c[8], typeof conn.connected_at_ms === 'number' ? duration(Date.now() - conn.connected_at_ms) : '–');
    c[8].title = typeof conn.connected_at_ms === 'number' ? new Date(conn.connected_at_ms).toLocaleString() : '';
    const trace = c[9].querySelector('.trace-toggle');
    setTraceButton(trace, conn.trace === true);
    tr.classList.toggle('slow', conn.slow === true);
    tr.classList.toggle('mine', mine);
  }

  function setTraceButton(button, on) {
    button.setAttribute('aria-pressed', String(on));
    setText(button, on ? 'Tracing' : 'Trace');
  }

  async function toggleTrace(id, button) {
    const enabled = button.getAttribute('aria-pressed') !== 'true';
    button.disabled = true;
    const r = await api('PUT', `/api/connections/${encodeURIComponent(id)}/trace`, { enabled });
    button.disabled = false;
    if (!r.ok) {
      notice('error', `trace ${id}: ${r.error}`);
      return;
    }
    const on = r.data?.trace === true;
    setTraceButton(button, on);
    notice('ok', `${id}: frame trace ${on ? 'on (logged by the broker)' : 'off'}`);
  }

  async function closeConnection(id, tr, button) {
    const own = id === mySession ? '\n\nThis is the dashboard\'s own connection; it will reconnect.' : '';
    if (!confirm(`Close connection ${id}? The client gets ERROR "closed by an administrator".${own}`)) return;
    button.disabled = true;
    const r = await api('DELETE', `/api/connections/${encodeURIComponent(id)}`);
    if (!r.ok) {
      button.disabled = false;
      notice('error', `close ${id}: ${r.error}`);
      return;
    }
    // The row stays, marked, until a snapshot no longer lists the connection: the
    // table shows what the broker reports, not what was asked of it.
    tr.classList.add('closing');
    notice('ok', `${id}: closed`);
  }

  function renderSlow() {
    const slow = connectionsOf(last).filter((c) => c.slow === true);
    const list = $('slow-consumers');
    if (!slow.length) {
      list.replaceChildren(el('li', { className: 'muted', textContent: 'None right now.' }));
      return;
    }
    list.replaceChildren(...slow.map((c) => {
      const item = el('li');
      item.dataset.id = String(c.id);
      const subs = (c.subscriptions ?? []).map((s) => s.destination).join(', ');
      item.append(
        el('strong', { textContent: String(c.id).slice(0, 8) }),
        ` ${c.peer ?? ''} · ${c.login ?? 'anonymous'} · outbox ${num(c.outbox_frames)} frames, ${bytes(c.outbox_bytes)}`,
        el('div', { className: 'muted', textContent: subs || 'no subscriptions' }),
      );
      item.title = String(c.id);
      return item;
    }));
  }

  $('destination-search').addEventListener('input', renderDestinations);
  $('connection-search').addEventListener('input', renderConnections);

  // --- publish ---------------------------------------------------------------

  function publishResult(state, text) {
    const out = $('publish-result');
    out.className = state;
    out.dataset.state = state;
    setText(out, text);
  }

  $('publish-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const destination = $('publish-destination').value.trim();
    const headers = {};
    const lines = $('publish-headers').value.split(/\r?\n/);
    for (const [i, line] of lines.entries()) {
      if (!line.trim()) continue;
      const colon = line.indexOf(':');
      if (colon <= 0) {
        publishResult('error', `header line ${i + 1} is not key:value`);
        return;
      }
      // Trimmed: spaces around a typed "key: value" are the form's, not the header's.
      headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
    }
    const submit = event.submitter ?? $('publish-form').querySelector('button[type=submit]');
    submit.disabled = true;
    publishResult('pending', 'publishing…');
    const r = await api('POST', '/api/messages', { destination, headers, body: $('publish-body').value });
    submit.disabled = false;
    if (r.ok) publishResult('ok', `published to ${r.data?.destination ?? destination}`);
    else publishResult('error', r.error);
  });

  // --- log level -------------------------------------------------------------

  function logLevelResult(state, text) {
    const out = $('log-level-result');
    out.className = state;
    setText(out, text);
  }

  async function loadLogLevel() {
    const r = await api('GET', '/api/log-level');
    if (r.ok && typeof r.data?.level === 'string') {
      $('log-level').value = r.data.level;
      logLevelResult('', `current: ${r.data.level}`);
    } else {
      logLevelResult('error', r.error ?? 'unexpected answer');
    }
  }

  $('log-level-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const level = $('log-level').value.trim();
    logLevelResult('pending', 'setting…');
    const r = await api('PUT', '/api/log-level', { level });
    if (r.ok) logLevelResult('ok', `now: ${r.data?.level ?? level}`);
    else logLevelResult('error', r.error);
  });

  status('offline', 'signed out');
})();
