// The service worker behind "Enable browser push": shows each Web Push
// message (a tidings notification, JSON) as a system notification, and
// focuses or opens the shop when one is clicked.
'use strict';

self.addEventListener('push', (event) => {
  let n = {};
  try { n = event.data ? event.data.json() : {}; } catch (_) { n = { title: event.data.text() }; }
  const title = n.title || 'tidings';
  event.waitUntil(self.registration.showNotification(title, {
    body: n.body || '',
    tag: n.id || undefined,
    icon: '/favicon.svg',
    data: { url: n.data && n.data.orderId ? '/flow.html#trace=' + n.data.orderId : '/' },
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || '/';
  event.waitUntil((async () => {
    const wins = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    for (const w of wins) {
      if ('focus' in w) { await w.navigate(url).catch(() => {}); return w.focus(); }
    }
    return self.clients.openWindow(url);
  })());
});
