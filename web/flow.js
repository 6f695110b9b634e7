// The event-flow page: every event on every topic as it happens (from the web
// service's store and its SSE stream), and the causal chain of any order drawn
// as a timeline: one row per event in causal order, indented under the event
// that caused it, with a dot at its time and a bar for the hop from its cause.
'use strict';

(() => {
  const { el, clock, shortId, serviceColor } = tidings;
  const $ = (id) => document.getElementById(id);

  const MAX_KEEP = 3000; // events kept for filtering
  const MAX_ROWS = 400;  // rows in the table
  const TOPICS = ['users', 'products', 'reservations', 'orders', 'payments', 'notifications'];

  const state = {
    events: [],          // oldest first
    lastSeq: 0,
    paused: false,
    pending: [],         // arrived while paused
    orders: new Map(),   // orderId -> {status, time}
    trace: null,         // {id, groups:Set, ids:Set}
    traceTimer: null,
    open: new Set(),     // ce_ids whose detail is open
  };

  // ---- live events table -----------------------------------------------------

  function matches(ev) {
    const topic = $('topic').value;
    if (topic && (ev.topic || '').replace(/\.DLT$/, '') !== topic) return false;
    const q = $('filter').value.trim().toLowerCase();
    if (!q) return true;
    return [ev.type, ev.key, ev.service, ev.id, ev.correlationid, ev.topic]
      .some((v) => v && String(v).toLowerCase().includes(q));
  }

  function row(ev, fresh) {
    const dlt = /\.DLT$/.test(ev.topic || '');
    return el('tr', { class: fresh ? 'new' : '', 'data-testid': 'event-row',
                      dataset: { seq: ev.seq, type: ev.type || '' },
                      onclick: () => showTrace(ev.correlationid || ev.id || ev.key),
                      title: 'Show the causal chain of this event' },
      el('td', { class: 'time' }, clock(ev.time)),
      el('td', {}, el('span', { class: 'topic' + (dlt ? ' dlt' : '') }, ev.topic)),
      el('td', { class: 'type' }, ev.type || '(not a CloudEvent)'),
      el('td', { class: 'key', title: ev.key || '' }, ev.key || ''),
      el('td', {}, ev.service ? el('span', { class: 'svc',
        style: { background: serviceColor(ev.service) } }, ev.service) : ''),
      el('td', { class: 'time' }, ev.partition + '@' + ev.offset));
  }

  function renderTable() {
    const body = $('events-body');
    const rows = [];
    for (let i = state.events.length - 1; i >= 0 && rows.length < MAX_ROWS; i--)
      if (matches(state.events[i])) rows.push(row(state.events[i], false));
    body.replaceChildren(...rows);
    $('events-empty').hidden = state.events.length > 0;
    renderCounter();
  }

  function renderCounter() {
    $('counter').textContent = state.events.length + ' events' +
      (state.paused && state.pending.length ? ' · ' + state.pending.length + ' new (paused)' : '');
  }

  function addEvent(ev, live) {
    if (ev.seq <= state.lastSeq) return; // a replay after reconnecting
    state.lastSeq = ev.seq;
    state.events.push(ev);
    if (state.events.length > MAX_KEEP) state.events.splice(0, state.events.length - MAX_KEEP);
    noteOrder(ev);
    if (live) {
      if (state.paused) {
        state.pending.push(ev);
      } else if (matches(ev)) {
        const body = $('events-body');
        body.prepend(row(ev, true));
        while (body.children.length > MAX_ROWS) body.lastChild.remove();
        $('events-empty').hidden = true;
      }
      renderCounter();
      if (state.trace && belongs(ev)) scheduleTrace();
      if (/\.DLT$/.test(ev.topic || '')) scheduleDeadLetters();
    }
  }

  // ---- dead letters (the web service does what `tidings dlt` does) ------------

  let dltTimer = null;
  function scheduleDeadLetters() {
    clearTimeout(dltTimer);
    dltTimer = setTimeout(loadDeadLetters, 500);
  }

  async function loadDeadLetters() {
    try {
      const res = await fetch('/api/dlt', { headers: authHeaders() });
      const page = await res.json();
      if (!res.ok) throw new Error((page.error && page.error.message) || res.statusText);
      renderDeadLetters(page.deadLetters || []);
    } catch (e) {
      $('dlt-counter').textContent = 'cannot read the dead letters: ' + e.message;
    }
  }

  async function redrive(d, button, status) {
    button.disabled = true;
    status.textContent = 'redriving…';
    try {
      const res = await fetch('/api/dlt/redrive', {
        method: 'POST', headers: { ...authHeaders(), 'Content-Type': 'application/json' },
        body: JSON.stringify({ ref: d.ref }) });
      const body = await res.json();
      if (res.ok) {
        status.textContent = 'redriven to ' + body.topic + ' [' + body.partition + '] @ ' +
                             body.offset;
      } else {
        status.textContent = (body.error && body.error.message) || res.statusText;
        if (res.status !== 409) button.disabled = false;
      }
    } catch (e) {
      status.textContent = 'the web service cannot be reached';
      button.disabled = false;
    }
  }

  function renderDeadLetters(list) {
    $('dlt-counter').textContent = list.length + ' dead letter' + (list.length === 1 ? '' : 's');
    $('dlt-empty').hidden = list.length > 0;
    $('dlt-body').replaceChildren(...list.slice().reverse().map((d) => {
      const status = el('span', { class: 'muted', 'data-testid': 'dlt-status' });
      const button = el('button', { class: 'btn', type: 'button', 'data-testid': 'dlt-redrive',
                                    title: 'Republish ' + d.ref + ' to ' + d.originalTopic },
                        'Redrive');
      button.addEventListener('click', () => redrive(d, button, status));
      const orig = (d.originalTopic || '?') + ' [' + d.originalPartition + '] @ ' +
                   d.originalOffset;
      return el('tr', { 'data-ref': d.ref, 'data-key': d.key || '' },
        el('td', {}, d.time ? clock(d.time) : '-'),
        el('td', { title: d.ref }, orig),
        el('td', {}, d.type || '(not a CloudEvent)'),
        el('td', { title: d.key || '' }, !d.key ? '-' : d.key.length > 20 ? shortId(d.key) : d.key),
        el('td', { class: 'reason' }, d.reason || ''),
        el('td', {}, button, ' ', status));
    }));
  }

  // ---- recent orders -----------------------------------------------------------

  function noteOrder(ev) {
    const id = ev.data && ev.data.orderId;
    if (!id || (ev.topic || '') !== 'orders') return;
    const o = state.orders.get(id) || { status: 'PENDING', time: ev.time };
    if (ev.type === 'OrderApprovedEvent') o.status = 'APPROVED';
    if (ev.type === 'OrderRejectedEvent') o.status = 'REJECTED';
    state.orders.set(id, o);
    renderRecent();
  }

  let recentTimer = null;
  function renderRecent() {
    clearTimeout(recentTimer);
    recentTimer = setTimeout(() => {
      const list = [...state.orders.entries()]
        .sort((a, b) => String(b[1].time).localeCompare(String(a[1].time))).slice(0, 10);
      $('recent').replaceChildren(
        list.length ? el('span', { class: 'muted small' }, 'Recent orders:') : '',
        ...list.map(([id, o]) => el('button', { class: 'chip', type: 'button', title: id,
                                                onclick: () => showTrace(id) },
          shortId(id), el('span', { class: 'status ' + o.status.toLowerCase() }, o.status))));
    }, 100);
  }

  // ---- causal chain ---------------------------------------------------------------

  function belongs(ev) {
    const t = state.trace;
    return t.groups.has(ev.correlationid) || t.ids.has(ev.causationid) || ev.key === t.id ||
      ev.id === t.id || ev.correlationid === t.id;
  }

  function scheduleTrace() {
    clearTimeout(state.traceTimer);
    state.traceTimer = setTimeout(() => loadTrace(state.trace.id, 0), 300);
  }

  function showTrace(id) {
    if (!id) return;
    $('trace-id').value = id;
    if (location.hash !== '#trace=' + id) history.replaceState(null, '', '#trace=' + id);
    state.open.clear();
    state.trace = { id, groups: new Set([id]), ids: new Set() };
    loadTrace(id, 0);
    $('trace-form').scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  async function loadTrace(id, attempt) {
    const msg = $('trace-msg');
    let res;
    try {
      res = await fetch('/api/trace/' + encodeURIComponent(id), { headers: authHeaders() });
    } catch (e) {
      msg.textContent = 'The web service cannot be reached.';
      msg.hidden = false;
      return;
    }
    if (!state.trace || state.trace.id !== id) return; // another trace was asked for
    if (res.status === 404) {
      // The events may still be on their way: keep asking for a while.
      if (attempt < 20) {
        msg.textContent = 'No events for ' + id + ' yet… waiting for them.';
        msg.hidden = false;
        $('trace-view').hidden = true;
        state.traceTimer = setTimeout(() => loadTrace(id, attempt + 1), 750);
      } else {
        msg.textContent = 'No events match ' + id + ' among the recent events.';
      }
      return;
    }
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      msg.textContent = (body.error && body.error.message) || 'error ' + res.status;
      msg.hidden = false;
      return;
    }
    const chain = await res.json();
    msg.hidden = true;
    state.trace.groups = new Set(chain.events.map((e) => e.group));
    state.trace.ids = new Set(chain.events.map((e) => e.id));
    renderTrace(chain);
  }

  function fmtMs(ms) {
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    return (ms / 60000).toFixed(1) + ' min';
  }

  // "ProductReservationCancelledEvent" with a <wbr> before each inner word,
  // so a deep row wraps the name instead of cutting it off.
  function breakable(type) {
    const out = [];
    String(type || '').split(/(?=[A-Z])/).forEach((w, i) => {
      if (i) out.push(el('wbr'));
      out.push(w);
    });
    return out;
  }

  function renderTrace(chain) {
    const evs = chain.events;
    const times = evs.map((e) => Date.parse(e.time));
    const t0 = Math.min(...times);
    const span = Math.max(1, Math.max(...times) - t0);
    const x = (t) => ((t - t0) / span) * 100;
    const byId = new Map(evs.map((e, i) => [e.id, i]));

    // Summary: what the chain is about and how it ended.
    const order = evs.find((e) => e.data && e.data.orderId);
    let outcome = '';
    for (const e of evs) {
      if (e.type === 'OrderApprovedEvent') outcome = 'APPROVED';
      if (e.type === 'OrderRejectedEvent') outcome = 'REJECTED';
    }
    if (!outcome && evs.some((e) => e.type === 'OrderCreatedEvent')) outcome = 'PENDING';
    $('trace-summary').replaceChildren(
      el('span', { class: 'big' }, order ? 'Order ' + shortId(order.data.orderId) : shortId(chain.id)),
      outcome ? el('span', { class: 'status ' + outcome.toLowerCase(),
                             'data-testid': 'trace-outcome' }, outcome) : '',
      el('span', { class: 'muted' }, evs.length + ' event' + (evs.length === 1 ? '' : 's') +
         ' · ' + fmtMs(chain.spanMs) + ' from first to last'),
      el('span', { class: 'muted small mono' }, chain.id));

    const services = [...new Set(evs.map((e) => e.service))];
    $('trace-legend').replaceChildren(...services.map((s) =>
      el('span', {}, el('span', { class: 'dot', style: { background: serviceColor(s) } }), s)));

    const rows = [];
    rows.push(el('div', { class: 'tl-axis' }, el('div', {}),
      el('div', { class: 'tl-axis-track' },
        el('span', { style: { left: '0%' } }, '0'),
        el('span', { style: { left: '50%' } }, fmtMs(Math.round(span / 2))),
        el('span', { style: { left: '100%' } }, fmtMs(span)))));
    let group = null;
    evs.forEach((e, i) => {
      if (e.group !== group) {
        group = e.group;
        const groups = new Set(evs.map((v) => v.group));
        if (groups.size > 1) rows.push(el('div', { class: 'group-head' }, 'correlation ' + group));
      }
      const t = times[i];
      const color = serviceColor(e.service);
      const track = el('div', { class: 'tl-track' });
      const p = e.parent !== null && byId.has(e.parent) ? byId.get(e.parent) : -1;
      if (p >= 0) {
        const a = x(times[p]), b = x(t);
        track.append(el('div', { class: 'tl-hop', style: { left: Math.min(a, b) + '%',
          width: Math.max(0.4, Math.abs(b - a)) + '%', background: color } }));
      }
      track.append(el('div', { class: 'tl-dot' + (e.deadLettered ? ' dlt' : ''),
                               style: { left: x(t) + '%', background: color },
                               title: e.type + ' at ' + clock(e.time) }));
      const indent = el('span', { class: 'tl-indent' });
      for (let d = 0; d < e.depth; d++) indent.append(el('span'));
      const cause = p >= 0 ? evs[p].type : null;
      const label = el('div', { class: 'tl-label' }, indent,
        el('span', { class: 'svc', style: { background: color } }, e.service),
        el('span', { class: 'tl-type', title: cause ? 'in reaction to ' + cause : 'started by a request' },
           breakable(e.type)),
        el('span', { class: 'tl-delay' },
           p >= 0 ? '+' + fmtMs(e.delayMs) : (e.causationid ? 'cause not seen' : 'request')));
      const r = el('div', { class: 'tl-row' + (state.open.has(e.id) ? ' open' : ''),
                            'data-testid': 'chain-event', dataset: { type: e.type, id: e.id } },
                   label, track);
      r.addEventListener('click', () => {
        if (state.open.has(e.id)) state.open.delete(e.id);
        else state.open.add(e.id);
        renderTrace(chain);
      });
      rows.push(r);
      if (state.open.has(e.id)) rows.push(detail(e, cause));
    });
    $('timeline').replaceChildren(...rows);
    $('trace-view').hidden = false;
  }

  function detail(e, cause) {
    const kv = el('dl', { class: 'kv' });
    const add = (k, v) => { if (v !== null && v !== undefined && v !== '') kv.append(el('dt', {}, k), el('dd', {}, String(v))); };
    add('time', e.time);
    add('service', e.source);
    add('topic', e.topic + ' partition ' + e.partition + ' offset ' + e.offset);
    add('key', e.key);
    add('ce_id', e.id);
    add('correlation', e.correlationid);
    add('caused by', e.causationid ? e.causationid + (cause ? ' (' + cause + ')' : '') : 'an HTTP request');
    if (e.deadLettered) add('dead-lettered', 'a copy is on ' + e.topic + '.DLT');
    return el('div', { class: 'tl-detail' }, kv,
      el('pre', { class: 'json' }, JSON.stringify(e.data, null, 2)));
  }

  // ---- start ----------------------------------------------------------------------

  function openStream() {
    const live = $('live');
    const es = new EventSource('/api/events/stream?after=' + state.lastSeq + '&token=' +
                               encodeURIComponent(tidings.session().token));
    es.addEventListener('open', () => { live.className = 'live on'; });
    es.addEventListener('error', () => { live.className = 'live off'; });
    es.addEventListener('event', (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { return; }
      addEvent(ev, true);
    });
  }

  function authHeaders() {
    const s = tidings.session();
    return s ? { Authorization: 'Bearer ' + s.token } : {};
  }

  // Every user's events pass here (emails, addresses, orders): the page is
  // for admins, and the web service refuses anyone else.
  function adminOnly() {
    const s = tidings.session();
    if (s && s.role === 'admin') return false;
    const main = document.querySelector('main');
    main.replaceChildren(el('section', { class: 'panel', 'data-testid': 'admin-only' },
      el('h2', {}, 'For administrators'),
      el('p', {}, 'The event flow shows every shopper\'s events, so only an administrator may ',
         'see it. ', el('a', { href: '/' }, 'Sign in as an admin in the shop'),
         ', then come back.')));
    return true;
  }

  async function start() {
    if (adminOnly()) return;
    const sel = $('topic');
    for (const t of TOPICS) sel.append(el('option', { value: t }, t));
    $('filter').addEventListener('input', renderTable);
    sel.addEventListener('change', renderTable);
    $('pause').addEventListener('click', () => {
      state.paused = !state.paused;
      $('pause').textContent = state.paused ? 'Resume' : 'Pause';
      if (!state.paused) {
        state.pending = [];
        renderTable();
      }
      renderCounter();
    });
    $('trace-form').addEventListener('submit', (e) => {
      e.preventDefault();
      showTrace($('trace-id').value.trim());
    });
    try {
      const res = await fetch('/api/events?limit=500', { headers: authHeaders() });
      const page = await res.json();
      for (const ev of page.events || []) addEvent(ev, false);
      if (page.last > state.lastSeq) state.lastSeq = page.last;
    } catch (_) { /* the stream will fill in */ }
    renderTable();
    openStream();
    $('dlt-refresh').addEventListener('click', loadDeadLetters);
    loadDeadLetters();
    const fromHash = () => {
      const m = location.hash.match(/^#trace=(.+)$/);
      if (m && (!state.trace || state.trace.id !== decodeURIComponent(m[1])))
        showTrace(decodeURIComponent(m[1]));
    };
    // A link or a typed URL that only changes the #trace= part loads no
    // page, so the chain follows the hash, not just the first load.
    window.addEventListener('hashchange', fromHash);
    fromHash();
  }

  start();
})();
