// Shared by every page: where the services are (/config.json from the web
// service), the signed-in session (localStorage), a small fetch wrapper that
// speaks the SPEC error shape, and formatting helpers. The pages call each
// service's API directly; the services answer CORS.
'use strict';

const tidings = (() => {
  let config = null;
  const SESSION_KEY = 'tidings.session';

  async function loadConfig() {
    if (config) return config;
    const res = await fetch('/config.json', { cache: 'no-store' });
    if (!res.ok) throw new Error('cannot load /config.json (' + res.status + ')');
    config = await res.json();
    return config;
  }

  function session() {
    try {
      const s = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
      if (s && s.token && (!s.expiresAt || Date.parse(s.expiresAt) > Date.now() + 5000)) return s;
    } catch (_) { /* a broken entry is no session */ }
    return null;
  }

  function saveSession(s) {
    if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
    else localStorage.removeItem(SESSION_KEY);
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // One request to service ("users", "products", ...). Resolves to the JSON
  // body (null for 204); rejects with an ApiError carrying the SPEC code.
  async function api(service, path, opts = {}) {
    const cfg = await loadConfig();
    const base = service === 'web' ? '' : cfg.services[service];
    const headers = {};
    const s = session();
    if (opts.auth !== false && s) headers.Authorization = 'Bearer ' + s.token;
    // Safe retries (SPEC section 2): the same key on every try of one action.
    if (opts.idempotencyKey) headers['Idempotency-Key'] = opts.idempotencyKey;
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    let res;
    try {
      res = await fetch(base + path, { method: opts.method || 'GET', headers, body });
    } catch (e) {
      throw new ApiError(0, 'unavailable', 'the ' + service + ' service cannot be reached');
    }
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(res.status, err.code || 'http_' + res.status,
                         err.message || res.statusText || 'request failed');
    }
    return data;
  }

  const money = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
  function formatMoney(v) {
    return typeof v === 'number' ? money.format(v) : '';
  }

  function timeAgo(iso) {
    const t = Date.parse(iso);
    if (!t) return '';
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 10) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return new Date(t).toLocaleDateString();
  }

  function clock(iso) {
    const t = Date.parse(iso);
    if (!t) return '';
    const d = new Date(t);
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' +
           p(d.getMilliseconds(), 3);
  }

  // el('div', {class: 'x', onclick: fn}, 'text', child...): a tiny DOM builder
  // that never parses HTML, so event data can never inject markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
      else if (k === 'class') node.className = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k === 'style' && typeof v === 'object') Object.assign(node.style, v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function shortId(id) {
    return id ? String(id).slice(0, 8) : '';
  }

  // Colours per service, the same on every page.
  const serviceColors = {
    users: '#0ea5e9', products: '#8b5cf6', orders: '#f59e0b',
    payments: '#10b981', notifications: '#ec4899', web: '#64748b',
  };
  function serviceColor(name) {
    return serviceColors[name] || '#94a3b8';
  }

  return { loadConfig, session, saveSession, api, ApiError, formatMoney, timeAgo, clock, el,
           shortId, serviceColor };
})();
