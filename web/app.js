// The storefront: products, sign-in and registration, orders that update
// live (PENDING -> APPROVED/REJECTED), the notification bell with its inbox,
// live toasts from the notifications SSE stream, watches, preferences,
// browser push, and the admin's catalogue editor.
//
// Live updates come from two streams: the user's notifications
// (GET /notifications/stream, EventSource reconnecting with Last-Event-ID by
// itself) and the web service's stream of every event on the bus
// (/api/events/stream), which keeps stock levels and order statuses fresh
// for everyone. A slow poll of a pending order is the safety net.
'use strict';

(() => {
  const { api, el, formatMoney, timeAgo, shortId, serviceColor } = tidings;
  const $ = (id) => document.getElementById(id);

  const NOTIFICATION_TYPES = [
    ['UserLoggedInEvent', 'New sign-ins to my account'],
    ['OrderCreatedEvent', 'Order received'],
    ['OrderApprovedEvent', 'Order confirmed'],
    ['OrderRejectedEvent', 'Order rejected'],
    ['ProductCreatedEvent', 'New products'],
    ['ProductUpdatedEvent', 'Price drops and back in stock'],
    ['ProductDeletedEvent', 'Products no longer available'],
  ];

  const state = {
    config: null,
    session: null,
    products: [],
    productsById: new Map(),
    orders: new Map(),        // orderId -> order
    ordersLoaded: false,      // the session's orders were read (an empty list means none)
    orderPolls: new Map(),    // orderId -> timer
    watches: new Set(),
    notifications: [],        // newest first
    seen: new Set(),          // notification ids
    unread: 0,
    maxSeq: 0,
    notifStream: null,
    busStream: null,
    refreshTimer: null,
  };

  // ---- toasts --------------------------------------------------------------

  function toast(title, body, kind = 'info') {
    const t = el('div', { class: 'toast ' + kind, role: 'status', 'data-testid': 'toast' },
      el('strong', {}, title), body ? el('div', { class: 'toast-body' }, body) : null);
    const box = $('toasts');
    box.prepend(t);
    while (box.children.length > 4) box.lastChild.remove();
    setTimeout(() => t.classList.add('leaving'), 6500);
    setTimeout(() => t.remove(), 7100);
  }

  function errorToast(e) {
    toast('Something went wrong', e && e.message ? e.message : String(e), 'error');
  }

  // Input the page refuses before asking a service: nothing went wrong yet.
  function inputToast(message) {
    toast('Please check your input', message, 'error');
  }

  // ---- session -------------------------------------------------------------

  function setSignedIn(s) {
    const changed = (state.session && state.session.token) !== (s && s.token);
    state.session = s;
    // The bus panel shows what this viewer may see (product events, plus
    // a signed-in shopper's own): a new session needs a new stream.
    if (changed || !state.busStream) openBusStream();
    $('signed-out').hidden = !!s;
    $('signed-in').hidden = !s;
    $('orders-signed-out').hidden = !!s;
    $('orders-empty').hidden = true;
    state.ordersLoaded = false; // until this session's orders are read
    $('who').textContent = s ? (s.name || s.email || 'signed in') : '';
    $('admin-panel').hidden = !(s && s.role === 'admin');
    if (!s) {
      closeNotificationStream();
      state.orders.clear();
      state.watches.clear();
      state.notifications = [];
      state.seen.clear();
      state.unread = 0;
      state.maxSeq = 0;
      for (const t of state.orderPolls.values()) clearTimeout(t);
      state.orderPolls.clear();
      renderOrders();
      renderBell();
      renderProducts();
    }
  }

  async function signIn(email, password) {
    const login = await api('users', '/login', { method: 'POST', body: { email, password },
                                                  auth: false });
    const s = { token: login.token, userId: login.userId, role: login.role,
                expiresAt: login.expiresAt, email };
    tidings.saveSession(s);
    try {
      const me = await api('users', '/users/me');
      s.name = me.name;
      s.email = me.email;
      tidings.saveSession(s);
    } catch (_) { /* the name is a nicety */ }
    await afterSignIn(s);
  }

  async function afterSignIn(s) {
    setSignedIn(s);
    renderAdmin();
    await Promise.all([loadOrders(), loadWatches(), loadNotifications()]);
    openNotificationStream();
    renderProducts();
  }

  function signOut() {
    tidings.saveSession(null);
    setSignedIn(null);
  }

  // A 401 means the token expired or the secret changed: start over.
  function handleAuthError(e) {
    if (e && e.status === 401 && state.session) {
      signOut();
      toast('Please sign in again', 'Your session has ended.');
      return true;
    }
    return false;
  }

  // ---- products ------------------------------------------------------------

  async function loadProducts() {
    let after = null;
    const all = [];
    for (let page = 0; page < 20; page++) {
      const q = '/products?limit=500' + (after ? '&after=' + encodeURIComponent(after) : '');
      const res = await api('products', q, { auth: false });
      all.push(...(res.products || []));
      if (!res.next) break;
      after = res.next;
    }
    state.products = all;
    state.productsById = new Map(all.map((p) => [p.productId, p]));
    renderProducts();
    renderAdmin();
    renderOrders();
  }

  function scheduleProductRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(() => loadProducts().catch(() => {}), 250);
  }

  // Cards are updated in place, so a live refresh never resets a quantity
  // being typed.
  const cards = new Map(); // productId -> card parts

  function makeCard(p) {
    const c = { product: p };
    c.qty = el('input', { type: 'number', min: '1', value: '1', class: 'qty',
                          'aria-label': 'Quantity', 'data-testid': 'qty' });
    c.buy = el('button', { class: 'btn primary', 'data-testid': 'buy' }, 'Buy');
    c.buy.addEventListener('click', () => {
      // "0", "-2" or "1.5" is a typo to point out, not an order of 1.
      const quantity = /^\s*\d+\s*$/.test(c.qty.value) ? Number(c.qty.value) : 0;
      if (quantity < 1) return inputToast('The quantity must be a whole number of at least 1.');
      placeOrder(c.product, quantity, c.buy);
    });
    c.watch = el('button', { class: 'btn ghost watch', 'data-testid': 'watch',
                             title: 'Get notified about price drops, restocks and removal' });
    c.watch.addEventListener('click', () => toggleWatch(c.product, c.watch));
    c.thumb = el('div', { class: 'thumb' });
    c.title = el('h3', { class: 'card-title' });
    c.price = el('span', { class: 'price', 'data-testid': 'price' });
    c.stock = el('span', { class: 'stock', 'data-testid': 'stock' });
    c.root = el('article', { class: 'card', 'data-testid': 'product-card',
                             dataset: { productId: p.productId } },
      c.thumb, c.title, el('div', { class: 'card-meta' }, c.price, c.stock),
      el('div', { class: 'card-actions' }, c.qty, c.buy, c.watch));
    return c;
  }

  function updateCard(c, p) {
    const before = c.product;
    c.product = p;
    c.root.dataset.title = p.title;
    c.title.textContent = p.title;
    c.thumb.textContent = p.title.split(/\s+/).slice(0, 2).map((w) => w[0] || '').join('')
      .toUpperCase();
    c.thumb.style.background = thumbColor(p.title);
    c.price.textContent = formatMoney(p.price);
    c.stock.className = 'stock' + (p.quantity <= 0 ? ' out' : p.quantity < 5 ? ' low' : '');
    c.stock.textContent = p.quantity <= 0 ? 'Out of stock'
      : p.quantity < 5 ? 'Only ' + p.quantity + ' left' : p.quantity + ' in stock';
    c.qty.max = String(Math.max(1, p.quantity));
    c.qty.hidden = p.quantity <= 0;
    c.buy.disabled = p.quantity <= 0;
    c.buy.textContent = p.quantity > 0 ? 'Buy' : 'Sold out';
    const watching = state.watches.has(p.productId);
    c.watch.hidden = !state.session;
    c.watch.classList.toggle('on', watching);
    c.watch.textContent = watching ? 'Watching' : 'Watch';
    if (before && (before.price !== p.price || before.quantity !== p.quantity)) {
      c.root.classList.remove('flash');
      void c.root.offsetWidth;
      c.root.classList.add('flash');
    }
  }

  function thumbColor(s) {
    let h = 0;
    for (const ch of s) h = (h * 31 + ch.charCodeAt(0)) % 360;
    return `linear-gradient(135deg, hsl(${h} 70% 92%), hsl(${(h + 40) % 360} 70% 84%))`;
  }

  function renderProducts() {
    const grid = $('grid');
    const keep = new Set();
    state.products.forEach((p, i) => {
      let c = cards.get(p.productId);
      if (!c) {
        c = makeCard(p);
        c.product = null;
        cards.set(p.productId, c);
      }
      updateCard(c, p);
      keep.add(p.productId);
      if (grid.children[i] !== c.root) grid.insertBefore(c.root, grid.children[i] || null);
    });
    for (const [id, c] of cards) {
      if (!keep.has(id)) {
        c.root.remove();
        cards.delete(id);
      }
    }
    $('grid-empty').hidden = state.products.length > 0;
    $('product-count').textContent = state.products.length
      ? state.products.length + ' product' + (state.products.length === 1 ? '' : 's') : '';
  }

  async function toggleWatch(p, button) {
    button.disabled = true;
    try {
      if (state.watches.has(p.productId)) {
        await api('notifications', '/watches/' + p.productId, { method: 'DELETE' });
        state.watches.delete(p.productId);
        toast('Stopped watching', p.title);
      } else {
        await api('notifications', '/watches', { method: 'POST',
                                                  body: { productId: p.productId } });
        state.watches.add(p.productId);
        toast('Watching ' + p.title, 'You will hear about price drops and restocks.');
      }
    } catch (e) {
      if (!handleAuthError(e)) errorToast(e);
    } finally {
      button.disabled = false; // else the first click is the only one
    }
    renderProducts();
  }

  async function loadWatches() {
    try {
      const res = await api('notifications', '/watches');
      state.watches = new Set((res.watches || []).map((w) => w.productId));
    } catch (e) {
      handleAuthError(e);
    }
  }

  // ---- orders --------------------------------------------------------------

  async function placeOrder(p, quantity, button) {
    if (!state.session) {
      openAuth('login', 'Sign in to place an order.');
      return;
    }
    button.disabled = true;
    // One key per order the user means to place: a retry after a lost
    // answer (the service restarted, the network dropped) gets the first
    // answer back instead of buying twice.
    const idempotencyKey = 'order-' + (crypto.randomUUID ? crypto.randomUUID()
                                        : Date.now() + '-' + Math.random().toString(16).slice(2));
    try {
      let res;
      for (let attempt = 0; ; attempt++) {
        try {
          res = await api('orders', '/orders', { method: 'POST', idempotencyKey,
                                                 body: { productId: p.productId, quantity } });
          break;
        } catch (e) {
          const retriable = e.status === 0 || e.status >= 500 || e.code === 'conflict';
          if (!retriable || attempt >= 4) throw e;
          await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
        }
      }
      const now = new Date().toISOString();
      state.orders.set(res.orderId, { orderId: res.orderId, productId: p.productId, quantity,
                                      status: res.status || 'PENDING', createdAt: now,
                                      updatedAt: now });
      renderOrders();
      toast('Order placed', quantity + ' × ' + p.title + ' — waiting for stock and payment');
      pollOrder(res.orderId, 0);
    } catch (e) {
      if (!handleAuthError(e)) errorToast(e);
    } finally {
      button.disabled = false;
    }
  }

  async function loadOrders() {
    try {
      const res = await api('orders', '/orders?limit=50');
      state.orders = new Map((res.orders || []).map((o) => [o.orderId, o]));
      state.ordersLoaded = true;
      renderOrders();
      for (const o of state.orders.values()) if (o.status === 'PENDING') pollOrder(o.orderId, 0);
    } catch (e) {
      handleAuthError(e);
    }
  }

  async function refreshOrder(orderId) {
    if (!state.session) return;
    try {
      const o = await api('orders', '/orders/' + orderId);
      const before = state.orders.get(orderId);
      state.orders.set(orderId, o);
      renderOrders();
      if (before && before.status !== o.status && o.status !== 'PENDING') scheduleProductRefresh();
      return o;
    } catch (e) {
      handleAuthError(e);
      return null;
    }
  }

  // The safety net under the live streams: polls a pending order, slower
  // and slower, until it is decided.
  function pollOrder(orderId, attempt) {
    clearTimeout(state.orderPolls.get(orderId));
    if (attempt > 60) return;
    const delay = Math.min(400 * Math.pow(1.3, attempt), 5000);
    state.orderPolls.set(orderId, setTimeout(async () => {
      const o = await refreshOrder(orderId);
      if (!o || o.status === 'PENDING') pollOrder(orderId, attempt + 1);
      else state.orderPolls.delete(orderId);
    }, delay));
  }

  const REASONS = {
    limit_exceeded: 'over the payment limit',
    out_of_stock: 'out of stock',
    unknown_product: 'no such product',
  };

  function orderItem(o) {
    const p = state.productsById.get(o.productId);
    const title = p ? p.title : 'Product ' + shortId(o.productId);
    const status = el('span', { class: 'status ' + o.status.toLowerCase(),
                                'data-testid': 'order-status' }, o.status);
    const detail = [];
    // The total is known once approved; before that (and to explain a
    // refusal over the limit) an estimate at today's price helps, but not
    // for an order refused for stock, which never had a price.
    if (o.total !== undefined && o.total !== null) detail.push(formatMoney(o.total));
    else if (p && (o.status === 'PENDING' || o.reason === 'limit_exceeded'))
      detail.push('≈ ' + formatMoney(Math.round(p.price * 100) * o.quantity / 100));
    if (o.reason) detail.push(REASONS[o.reason] || o.reason);
    return el('li', { class: 'order', 'data-testid': 'order',
                      dataset: { orderId: o.orderId, status: o.status } },
      el('div', { class: 'order-main' },
        el('div', { class: 'order-title' }, o.quantity + ' × ' + title),
        el('div', { class: 'muted small' }, detail.join(' · ') + (detail.length ? ' · ' : '') +
           timeAgo(o.createdAt))),
      el('div', { class: 'order-side' }, status,
        el('a', { class: 'small', href: '/flow.html#trace=' + o.orderId,
                  title: 'Follow this order\'s events' }, 'events →')));
  }

  function renderOrders() {
    const list = [...state.orders.values()].sort((a, b) =>
      String(b.createdAt).localeCompare(String(a.createdAt)));
    $('orders').replaceChildren(...list.map(orderItem));
    $('orders-empty').hidden = !state.session || !state.ordersLoaded || list.length > 0;
  }

  // ---- notifications ---------------------------------------------------------

  function addNotification(n, live) {
    if (!n || state.seen.has(n.id)) return false;
    state.seen.add(n.id);
    state.notifications.push(n);
    state.notifications.sort((a, b) => (b.seq || 0) - (a.seq || 0));
    if (n.seq > state.maxSeq) state.maxSeq = n.seq;
    if (live) {
      toast(n.title, n.body, n.type === 'OrderRejectedEvent' ? 'warn' : 'info');
      const bell = $('bell');
      bell.classList.remove('ring');
      void bell.offsetWidth;
      bell.classList.add('ring');
      const d = n.data || {};
      if (d.orderId && state.orders.has(d.orderId)) refreshOrder(d.orderId);
      if (d.productId) scheduleProductRefresh();
    }
    return true;
  }

  async function loadNotifications() {
    try {
      const res = await api('notifications', '/notifications?limit=50');
      state.notifications = [];
      state.seen.clear();
      state.unread = 0;
      for (const n of res.notifications || []) addNotification(n, false);
      renderBell();
    } catch (e) {
      handleAuthError(e);
    }
  }

  // One card per thread (an order, a product, the account), showing its
  // latest notification and the steps before it: "Order received" becomes
  // "Order confirmed" in place as the saga moves, as the server's
  // ?collapse=thread lists them. The bell counts unread cards.
  function threadCards() {
    const cards = new Map();
    for (const n of state.notifications) { // newest first
      const key = n.thread || n.id;
      const c = cards.get(key);
      if (c) c.earlier.unshift(n);
      else cards.set(key, { latest: n, earlier: [] });
    }
    return [...cards.values()];
  }

  function renderBell() {
    const cards = threadCards();
    state.unread = cards.filter((c) => !c.latest.readAt).length;
    const c = $('bell-count');
    c.hidden = state.unread <= 0;
    c.textContent = state.unread > 99 ? '99+' : String(state.unread);
    const list = $('inbox-list');
    list.replaceChildren(...cards.slice(0, 50).map(({ latest: n, earlier }) =>
      el('li', { class: 'inbox-item' + (n.readAt ? '' : ' unread'),
                 'data-testid': 'notification', dataset: { id: n.id, thread: n.thread || '' } },
        el('div', { class: 'inbox-text', onclick: () => { markRead(n); showDeliveries(n); } },
          el('div', { class: 'inbox-title' }, n.title),
          n.body ? el('div', { class: 'inbox-body' }, n.body) : null,
          earlier.length ? el('div', { class: 'muted small', 'data-testid': 'thread-steps' },
            [...earlier.map((e) => e.title), n.title].join(' → ')) : null,
          el('div', { class: 'muted small', 'data-testid': 'deliveries',
                      dataset: { for: n.id } }, timeAgo(n.createdAt))),
        el('button', { class: 'icon-btn small', title: 'Delete', 'aria-label': 'Delete',
                       onclick: (e) => { e.stopPropagation(); deleteNotification(n); } }, '×'))));
    $('inbox-empty').hidden = state.notifications.length > 0;
  }

  // "sent to 2 devices, webhook failed, push held until 07:00" under a card.
  async function showDeliveries(n) {
    try {
      const full = await api('notifications', '/notifications/' + n.id);
      const by = {};
      for (const d of full.deliveries || []) {
        const k = d.channel + ' ' + d.status;
        by[k] = by[k] || { ...d, count: 0 };
        by[k].count++;
      }
      const parts = Object.values(by).map((d) => {
        const what = d.channel === 'push' ? d.count + ' device' + (d.count > 1 ? 's' : '')
                                          : d.count + ' ' + d.channel + (d.count > 1 ? 's' : '');
        if (d.status === 'held')
          return 'held for ' + what + ' until ' + new Date(d.updatedAt).toLocaleTimeString();
        return d.status + (d.status === 'failed' ? ' for ' : ' to ') + what;
      });
      const line = document.querySelector(`[data-testid=deliveries][data-for="${n.id}"]`);
      if (line) line.textContent = timeAgo(n.createdAt) + ' · ' +
        (parts.length ? parts.join(', ') : 'in your inbox only');
    } catch (e) {
      handleAuthError(e);
    }
  }

  async function markRead(n) {
    if (n.readAt) return;
    try {
      await api('notifications', '/notifications/' + n.id + '/read', { method: 'POST' });
      n.readAt = new Date().toISOString();
      renderBell();
    } catch (e) {
      if (!handleAuthError(e)) errorToast(e);
    }
  }

  async function deleteNotification(n) {
    try {
      await api('notifications', '/notifications/' + n.id, { method: 'DELETE' });
      state.notifications = state.notifications.filter((x) => x.id !== n.id);
      if (!n.readAt) state.unread = Math.max(0, state.unread - 1);
      renderBell();
    } catch (e) {
      if (!handleAuthError(e)) errorToast(e);
    }
  }

  async function readAll() {
    try {
      await api('notifications', '/notifications/read-all', { method: 'POST' });
      const now = new Date().toISOString();
      for (const n of state.notifications) n.readAt = n.readAt || now;
      state.unread = 0;
      renderBell();
    } catch (e) {
      if (!handleAuthError(e)) errorToast(e);
    }
  }

  // The live stream of this user's notifications. Opened after the inbox is
  // loaded, from the newest seq it holds, so nothing falls in between; the
  // browser reconnects by itself with Last-Event-ID.
  function openNotificationStream() {
    closeNotificationStream();
    if (!state.session) return;
    const url = state.config.services.notifications + '/notifications/stream?token=' +
      encodeURIComponent(state.session.token) + '&after=' + state.maxSeq;
    const es = new EventSource(url);
    state.notifStream = es;
    const live = $('live');
    es.addEventListener('open', () => { live.className = 'live on'; live.title = 'Live'; });
    es.addEventListener('error', () => {
      live.className = 'live off';
      live.title = 'Reconnecting…';
      if (es.readyState === EventSource.CLOSED) {
        // The server refused (e.g. 401): check the session, retry later.
        setTimeout(async () => {
          if (state.notifStream !== es) return;
          try { await api('users', '/users/me'); openNotificationStream(); }
          catch (e) { if (!handleAuthError(e)) setTimeout(openNotificationStream, 3000); }
        }, 2000);
      }
    });
    es.addEventListener('notification', (e) => {
      let n;
      try { n = JSON.parse(e.data); } catch (_) { return; }
      if (addNotification(n, true)) renderBell();
    });
  }

  function closeNotificationStream() {
    if (state.notifStream) state.notifStream.close();
    state.notifStream = null;
  }

  // ---- every event on the bus (web service) ----------------------------------

  function openBusStream() {
    if (state.busStream) state.busStream.close();
    const s = state.session;
    const es = new EventSource('/api/events/stream' +
                               (s ? '?token=' + encodeURIComponent(s.token) : ''));
    state.busStream = es;
    es.addEventListener('event', (e) => {
      let ev;
      try { ev = JSON.parse(e.data); } catch (_) { return; }
      addTicker(ev);
      const topic = (ev.topic || '').replace(/\.DLT$/, '');
      if (topic === 'products' || topic === 'reservations') scheduleProductRefresh();
      const orderId = ev.data && ev.data.orderId;
      if (orderId && state.orders.has(orderId) && topic === 'orders') refreshOrder(orderId);
    });
  }

  function addTicker(ev) {
    if (!ev.type) return;
    const t = $('ticker');
    // Two lines, so a long type (ProductReservationCancelledEvent) is read
    // whole in the narrow side panel instead of ending in an ellipsis.
    t.prepend(el('li', { title: ev.type + ' on ' + ev.topic },
      el('span', { class: 'dot', style: { background: serviceColor(ev.service) } }),
      el('div', { class: 'ticker-main' },
        el('div', { class: 'ticker-type', 'data-testid': 'ticker-type' }, ev.type),
        el('div', { class: 'muted small' }, ev.service + ' · ' + tidings.clock(ev.time)))));
    while (t.children.length > 8) t.lastChild.remove();
  }

  // ---- dialogs ---------------------------------------------------------------

  function openAuth(which, message) {
    const d = $('auth-dialog');
    showTab(which);
    const err = $(which === 'login' ? 'login-error' : 'register-error');
    err.hidden = !message;
    err.textContent = message || '';
    err.classList.toggle('info', !!message);
    if (!d.open) d.showModal();
    $(which === 'login' ? 'login-email' : 'reg-name').focus();
  }

  function showTab(which) {
    $('tab-login').classList.toggle('active', which === 'login');
    $('tab-register').classList.toggle('active', which === 'register');
    $('login-form').hidden = which !== 'login';
    $('register-form').hidden = which !== 'register';
  }

  function showError(id, e) {
    const p = $(id);
    p.classList.remove('info');
    p.textContent = e.message || String(e);
    p.hidden = false;
  }

  async function submitLogin(ev) {
    ev.preventDefault();
    const btn = $('login-submit');
    btn.disabled = true;
    $('login-error').hidden = true;
    try {
      await signIn($('login-email').value.trim(), $('login-password').value);
      $('auth-dialog').close();
      $('login-form').reset();
    } catch (e) {
      showError('login-error', e.status === 401 ? { message: 'Wrong email or password.' } : e);
    } finally {
      btn.disabled = false;
    }
  }

  async function submitRegister(ev) {
    ev.preventDefault();
    const btn = $('register-submit');
    btn.disabled = true;
    $('register-error').hidden = true;
    const name = $('reg-name').value.trim();
    const email = $('reg-email').value.trim();
    const password = $('reg-password').value;
    try {
      await api('users', '/users', { method: 'POST', body: { email, password, name },
                                     auth: false });
      await signIn(email, password);
      $('auth-dialog').close();
      $('register-form').reset();
      toast('Welcome, ' + name + '!', 'Your account is ready.');
    } catch (e) {
      showError('register-error', e.status === 409
        ? { message: 'An account with this email already exists. Sign in instead?' } : e);
    } finally {
      btn.disabled = false;
    }
  }

  async function openPrefs() {
    const d = $('prefs-dialog');
    $('prefs-error').hidden = true;
    const list = $('mute-list');
    list.replaceChildren(...NOTIFICATION_TYPES.map(([type, label]) =>
      el('label', { class: 'check' }, el('input', { type: 'checkbox', value: type }), label)));
    // The saved settings first, then the dialog: shown earlier, a box the
    // user ticks could be unticked again by the answer arriving after it,
    // and Save would store what the user never chose.
    $('prefs-save').disabled = true;
    try {
      const prefs = await api('notifications', '/preferences');
      $('pref-new-products').checked = !!prefs.newProducts;
      const ch = prefs.channels || {};
      for (const name of ['push', 'webhook', 'email'])
        $('pref-ch-' + name).checked = !!(ch[name] && ch[name].enabled);
      const q = prefs.quietHours;
      $('pref-quiet-on').checked = !!q;
      $('pref-quiet-start').value = q ? q.start : '22:00';
      $('pref-quiet-end').value = q ? q.end : '07:00';
      $('pref-quiet-zone').value = q ? q.timeZone
        : (Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC');
      const digest = String(prefs.digestMinutes || 0);
      const sel = $('pref-digest');
      if (![...sel.options].some((o) => o.value === digest))
        sel.append(el('option', { value: digest }, 'at most one every ' + digest + ' minutes'));
      sel.value = digest;
      const muted = new Set(prefs.muted || []);
      for (const box of list.querySelectorAll('input')) box.checked = muted.has(box.value);
      $('prefs-save').disabled = false;
    } catch (e) {
      if (handleAuthError(e)) return;
      showError('prefs-error', e);
    }
    if (!d.open) d.showModal();
    setupPush();
  }

  async function savePrefs(ev) {
    ev.preventDefault();
    const muted = [...$('mute-list').querySelectorAll('input:checked')].map((b) => b.value);
    const channels = {};
    for (const name of ['push', 'webhook', 'email'])
      channels[name] = { enabled: $('pref-ch-' + name).checked };
    const quietHours = $('pref-quiet-on').checked
      ? { start: $('pref-quiet-start').value, end: $('pref-quiet-end').value,
          timeZone: $('pref-quiet-zone').value.trim() }
      : null;
    $('prefs-error').hidden = true;
    try {
      await api('notifications', '/preferences', { method: 'PUT',
        body: { muted, newProducts: $('pref-new-products').checked, channels, quietHours,
                digestMinutes: Number($('pref-digest').value) } });
      $('prefs-dialog').close();
      toast('Settings saved', muted.length ? muted.length + ' type(s) muted' : '');
    } catch (e) {
      if (!handleAuthError(e)) showError('prefs-error', e);
    }
  }

  // ---- browser push ----------------------------------------------------------

  function b64urlToBytes(s) {
    const pad = '='.repeat((4 - (s.length % 4)) % 4);
    const raw = atob((s + pad).replace(/-/g, '+').replace(/_/g, '/'));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }

  async function setupPush() {
    const box = $('push-box');
    box.hidden = true;
    if (!('serviceWorker' in navigator) || !('PushManager' in window) || !window.isSecureContext)
      return;
    let key;
    try {
      key = (await api('notifications', '/webpush/vapid-public-key', { auth: false })).publicKey;
    } catch (_) {
      return; // no Web Push on this server: hide the option
    }
    if (!key) return;
    box.hidden = false;
    const status = $('push-status');
    status.textContent = Notification.permission === 'granted' ? 'Allowed in this browser.' : '';
    $('btn-push').onclick = async () => {
      status.textContent = 'Asking the browser…';
      try {
        const permission = await Notification.requestPermission();
        if (permission !== 'granted') {
          status.textContent = 'The browser did not allow notifications.';
          return;
        }
        const reg = await navigator.serviceWorker.register('/sw.js');
        await navigator.serviceWorker.ready;
        let sub = await reg.pushManager.getSubscription();
        if (!sub) {
          sub = await reg.pushManager.subscribe({ userVisibleOnly: true,
                                                  applicationServerKey: b64urlToBytes(key) });
        }
        const j = sub.toJSON();
        await api('notifications', '/webpush/subscriptions', { method: 'POST',
          body: { endpoint: j.endpoint, keys: { p256dh: j.keys.p256dh, auth: j.keys.auth } } });
        status.textContent = 'Browser push is on.';
      } catch (e) {
        status.textContent = 'Push is not available here: ' + (e.message || e);
      }
    };
  }

  // ---- admin -----------------------------------------------------------------

  function parseMoney(s) {
    const t = String(s).trim().replace(/^\$/, '');
    if (!/^\d+(\.\d{1,2})?$/.test(t)) return null;
    return Number(t);
  }

  function parseStock(s) {
    const t = String(s).trim();
    return /^\d+$/.test(t) ? Number(t) : null;
  }

  async function addProduct(ev) {
    ev.preventDefault();
    const title = $('add-title').value.trim();
    const price = parseMoney($('add-price').value);
    const quantity = parseStock($('add-qty').value);
    if (price === null) return inputToast('Price must be a number with at most 2 decimals.');
    if (quantity === null) return inputToast('Stock must be a whole number.');
    try {
      await api('products', '/products', { method: 'POST', body: { title, price, quantity } });
      $('add-form').reset();
      toast('Product added', title);
      await loadProducts();
    } catch (e) {
      if (!handleAuthError(e)) errorToast(e);
    }
  }

  // Rows are updated in place too; a field the admin is editing keeps its
  // text until saved.
  const adminRows = new Map(); // productId -> row parts

  function makeAdminRow(p) {
    const r = { product: p };
    const field = (attrs) => {
      const input = el('input', attrs);
      input.addEventListener('input', () => { input.dataset.dirty = '1'; });
      return input;
    };
    r.title = field({ maxlength: '200', 'aria-label': 'Title' });
    r.price = field({ inputmode: 'decimal', class: 'num', 'aria-label': 'Price' });
    r.qty = field({ inputmode: 'numeric', class: 'num', 'aria-label': 'Stock' });
    const save = el('button', { class: 'btn small' }, 'Save');
    const del = el('button', { class: 'btn small danger' }, 'Delete');
    save.addEventListener('click', () => saveProduct(r));
    del.addEventListener('click', () => deleteProduct(r.product));
    r.tr = el('tr', { dataset: { productId: p.productId } },
      el('td', {}, r.title), el('td', {}, r.price), el('td', {}, r.qty),
      el('td', { class: 'row-actions' }, save, del));
    return r;
  }

  function updateAdminRow(r, p) {
    r.product = p;
    r.tr.dataset.title = p.title;
    if (r.title.dataset.dirty !== '1') r.title.value = p.title;
    // Money with its cents, as the shop shows it: 849.5 is "849.50".
    if (r.price.dataset.dirty !== '1') r.price.value = p.price.toFixed(2);
    if (r.qty.dataset.dirty !== '1') r.qty.value = String(p.quantity);
  }

  async function saveProduct(r) {
    const p = r.product;
    const body = {};
    const title = r.title.value.trim();
    const price = parseMoney(r.price.value);
    const quantity = parseStock(r.qty.value);
    if (!title) return inputToast('The title cannot be empty.');
    if (price === null) return inputToast('Price must be a number with at most 2 decimals.');
    if (quantity === null) return inputToast('Stock must be a whole number.');
    if (title !== p.title) body.title = title;
    if (price !== p.price) body.price = price;
    if (quantity !== p.quantity) body.quantity = quantity;
    if (!Object.keys(body).length) return toast('Nothing to save', p.title);
    try {
      await api('products', '/products/' + p.productId, { method: 'PATCH', body });
      for (const f of [r.title, r.price, r.qty]) delete f.dataset.dirty;
      toast('Saved', title);
      await loadProducts();
    } catch (e) {
      if (!handleAuthError(e)) errorToast(e);
    }
  }

  async function deleteProduct(p) {
    if (!confirm('Delete "' + p.title + '"?')) return;
    try {
      await api('products', '/products/' + p.productId, { method: 'DELETE' });
      toast('Deleted', p.title);
      await loadProducts();
    } catch (e) {
      if (!handleAuthError(e)) errorToast(e);
    }
  }

  function renderAdmin() {
    if (!state.session || state.session.role !== 'admin') return;
    const body = $('admin-rows');
    const keep = new Set();
    state.products.forEach((p, i) => {
      let r = adminRows.get(p.productId);
      if (!r) {
        r = makeAdminRow(p);
        adminRows.set(p.productId, r);
      }
      updateAdminRow(r, p);
      keep.add(p.productId);
      if (body.children[i] !== r.tr) body.insertBefore(r.tr, body.children[i] || null);
    });
    for (const [id, r] of adminRows) {
      if (!keep.has(id)) {
        r.tr.remove();
        adminRows.delete(id);
      }
    }
  }

  // ---- start -----------------------------------------------------------------

  function wire() {
    $('btn-login').addEventListener('click', () => openAuth('login'));
    $('btn-logout').addEventListener('click', signOut);
    $('tab-login').addEventListener('click', () => showTab('login'));
    $('tab-register').addEventListener('click', () => showTab('register'));
    $('login-form').addEventListener('submit', submitLogin);
    $('register-form').addEventListener('submit', submitRegister);
    $('prefs-form').addEventListener('submit', savePrefs);
    $('btn-prefs').addEventListener('click', openPrefs);
    $('add-form').addEventListener('submit', addProduct);
    $('read-all').addEventListener('click', readAll);
    for (const b of document.querySelectorAll('[data-close]'))
      b.addEventListener('click', () => b.closest('dialog').close());
    $('bell').addEventListener('click', (e) => {
      e.stopPropagation();
      const inbox = $('inbox');
      inbox.hidden = !inbox.hidden;
      if (!inbox.hidden) loadNotifications();
    });
    $('inbox').addEventListener('click', (e) => e.stopPropagation());
    document.addEventListener('click', () => { $('inbox').hidden = true; });
    setInterval(renderOrders, 30000); // keeps "x min ago" honest
  }

  async function start() {
    wire();
    try {
      state.config = await tidings.loadConfig();
    } catch (e) {
      errorToast(e);
      return;
    }
    if (typeof state.config.paymentLimit === 'number') {
      $('limit-note').textContent = 'Orders up to ' + formatMoney(state.config.paymentLimit) +
        ' are approved; larger ones are declined by payments.';
    }
    try {
      await loadProducts();
    } catch (e) {
      errorToast(e);
    }
    const s = tidings.session();
    if (s) await afterSignIn(s);
    else setSignedIn(null);
  }

  start();
})();
