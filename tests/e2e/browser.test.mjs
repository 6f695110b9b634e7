// The browser half of 0090_browser.sh: drives headless Chromium through the
// shop as a person would, against the `tidings run` at SHOP_URL. Every step
// waits (bounded) for what a person would see; a failing step saves a
// screenshot and the page's console, and the process exits 1.
import { chromium } from 'playwright-core';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const SHOP = process.env.SHOP_URL;
const ART = process.env.ARTIFACTS || '/tmp';
const ADMIN_PASSWORD = process.env.ADMIN_PASSWORD;
const WAIT = 30000;
if (!SHOP) throw new Error('SHOP_URL is not set');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage'],
});

const pageErrors = [];
const consoleLines = [];
async function newPage(name) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
  page.on('console', (m) => consoleLines.push(`${name} ${m.type()}: ${m.text()}`));
  page.on('dialog', (d) => d.accept());
  return page;
}

let current = null; // the page a failure screenshot is taken of
let passed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok ${passed} - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    console.log(`not ok - ${name}: ${e.message}`);
    if (current) {
      await current.screenshot({ path: join(ART, '0090-failure.png'), fullPage: true })
        .catch(() => {});
    }
    writeFileSync(join(ART, '0090-console.txt'), consoleLines.join('\n') + '\n');
    const errors = consoleLines.filter((l) => / error: /.test(l)).slice(-10);
    if (errors.length) console.log('browser console errors:\n  ' + errors.join('\n  '));
    if (pageErrors.length) console.log('page errors:\n  ' + pageErrors.join('\n  '));
    await browser.close();
    process.exit(1);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: join(ART, `0090-${name}.png`), fullPage: true });
}

const card = (page, title) => page.locator(`[data-testid=product-card][data-title="${title}"]`);

// Waits until the bell shows at least n unread.
async function bellAtLeast(page, n) {
  await page.waitForFunction((min) => {
    const b = document.querySelector('[data-testid=bell-count]');
    return b && !b.hidden && parseInt(b.textContent, 10) >= min;
  }, n, { timeout: WAIT });
}

async function openInboxAndFind(page, text) {
  const inbox = page.locator('[data-testid=inbox]');
  if (await inbox.isHidden()) await page.click('[data-testid=bell]');
  await page.locator('[data-testid=notification]', { hasText: text }).first()
    .waitFor({ timeout: WAIT });
}

async function closeInbox(page) {
  if (await page.locator('[data-testid=inbox]').isVisible()) await page.mouse.click(5, 880);
}

// ---- the shopper ---------------------------------------------------------------

const shopper = await newPage('shopper');
current = shopper;
const email = `ada.${Date.now()}@example.com`;
let approvedId = null;
let rejectedId = null;

await step('the shop shows the sample catalogue', async () => {
  await shopper.goto(SHOP, { waitUntil: 'domcontentloaded' });
  await card(shopper, 'iPhone 15').waitFor({ timeout: WAIT });
  const n = await shopper.locator('[data-testid=product-card]').count();
  if (n < 6) throw new Error(`only ${n} products shown`);
  const price = await card(shopper, 'iPhone 15').locator('[data-testid=price]').textContent();
  if (!price.includes('1,129')) throw new Error(`iPhone 15 costs "${price}"`);
  await shot(shopper, '01-shop');
});

await step('a new shopper registers and is signed in', async () => {
  await shopper.click('[data-testid=sign-in]');
  await shopper.click('[data-testid=tab-register]');
  await shopper.fill('#reg-name', 'Ada Lovelace');
  await shopper.fill('#reg-email', email);
  await shopper.fill('#reg-password', 'analytical-engine');
  await shopper.click('#register-submit');
  await shopper.waitForFunction(() =>
    document.querySelector('[data-testid=who]').textContent.includes('Ada Lovelace'),
  null, { timeout: WAIT });
  // The welcome notification reaches the bell.
  await bellAtLeast(shopper, 1);
  await shot(shopper, '02-registered');
});

await step('an order turns APPROVED and its notification arrives, without a reload', async () => {
  await shopper.evaluate(() => { window.__noReload = true; });
  const before = parseInt(await shopper.locator('[data-testid=bell-count]').textContent(), 10);
  const iphone = card(shopper, 'iPhone 15');
  await iphone.locator('[data-testid=qty]').fill('1');
  await iphone.locator('[data-testid=buy]').click();
  const order = shopper.locator('[data-testid=order]').first();
  await order.waitFor({ timeout: WAIT });
  approvedId = await order.getAttribute('data-order-id');
  await shopper.locator(`[data-testid=order][data-order-id="${approvedId}"][data-status=APPROVED]`)
    .waitFor({ timeout: WAIT });
  await shopper.locator('[data-testid=toast]', { hasText: 'Order confirmed' }).first()
    .waitFor({ timeout: WAIT });
  await bellAtLeast(shopper, before + 1);
  await shot(shopper, '03-approved');
  await openInboxAndFind(shopper, 'Order confirmed');
  // One card for the order: "Order received" became "Order confirmed" in place.
  const orderCards = shopper.locator(`[data-testid=notification][data-thread="order:${approvedId}"]`);
  await shopper.waitForFunction((t) =>
    document.querySelectorAll(`[data-testid=notification][data-thread="${t}"]`).length === 1,
  'order:' + approvedId, { timeout: WAIT });
  const steps = await orderCards.locator('[data-testid=thread-steps]').textContent();
  if (steps !== 'Order received → Order confirmed') throw new Error(`order card steps: "${steps}"`);
  if ((await orderCards.locator('.inbox-title').textContent()) !== 'Order confirmed')
    throw new Error('the order card does not show its latest notification');
  await shot(shopper, '04-inbox');
  if (!(await shopper.evaluate(() => window.__noReload === true)))
    throw new Error('the page was reloaded');
  // Reading a notification lowers the count.
  const unread = parseInt(await shopper.locator('[data-testid=bell-count]').textContent(), 10);
  await shopper.locator('[data-testid=notification].unread').first().locator('.inbox-text')
    .click();
  await shopper.waitForFunction((u) => {
    const b = document.querySelector('[data-testid=bell-count]');
    return b.hidden || parseInt(b.textContent, 10) < u;
  }, unread, { timeout: WAIT });
  await closeInbox(shopper);
});

await step('an order over the payment limit turns REJECTED', async () => {
  const iphone = card(shopper, 'iPhone 15');
  await iphone.locator('[data-testid=qty]').fill('5'); // 5 x 1129 = 5645 > 5000
  await iphone.locator('[data-testid=buy]').click();
  await shopper.waitForFunction((first) => {
    const o = document.querySelector('[data-testid=order]');
    return o && o.dataset.orderId !== first;
  }, approvedId, { timeout: WAIT });
  const rejected = shopper.locator('[data-testid=order]').first();
  const id = await rejected.getAttribute('data-order-id');
  rejectedId = id;
  await shopper.locator(`[data-testid=order][data-order-id="${id}"][data-status=REJECTED]`)
    .waitFor({ timeout: WAIT });
  const text = await rejected.textContent();
  if (!text.includes('payment limit')) throw new Error(`no reason shown: "${text}"`);
  await shopper.locator('[data-testid=toast]', { hasText: 'Order rejected' }).first()
    .waitFor({ timeout: WAIT });
  if (!(await shopper.evaluate(() => window.__noReload === true)))
    throw new Error('the page was reloaded');
  await shot(shopper, '05-rejected');
});

await step('the shopper watches a product', async () => {
  const kindle = card(shopper, 'Kindle Paperwhite');
  await kindle.locator('[data-testid=watch]').click();
  await kindle.locator('[data-testid=watch].on').waitFor({ timeout: WAIT });
});

await step('a watch can be undone and made again without a reload', async () => {
  const watch = card(shopper, 'Kindle Paperwhite').locator('[data-testid=watch]');
  await watch.click({ timeout: 5000 }); // a button left disabled times out here
  await card(shopper, 'Kindle Paperwhite').locator('[data-testid=watch]:not(.on)')
    .waitFor({ timeout: WAIT });
  await shopper.locator('[data-testid=toast]', { hasText: 'Stopped watching' }).first()
    .waitFor({ timeout: WAIT });
  await watch.click({ timeout: 5000 });
  await card(shopper, 'Kindle Paperwhite').locator('[data-testid=watch].on')
    .waitFor({ timeout: WAIT });
  if (await watch.isDisabled()) throw new Error('the watch button stays disabled');
});

await step('a quantity below 1 is refused on the page, not ordered as 1', async () => {
  const before = await shopper.locator('[data-testid=order]').count();
  const iphone = card(shopper, 'iPhone 15');
  await iphone.locator('[data-testid=qty]').fill('0');
  await iphone.locator('[data-testid=buy]').click();
  await shopper.locator('[data-testid=toast]', { hasText: 'at least 1' }).first()
    .waitFor({ timeout: WAIT });
  const after = await shopper.locator('[data-testid=order]').count();
  if (after !== before) throw new Error(`an order was placed for quantity 0 (${before} -> ${after})`);
  await iphone.locator('[data-testid=qty]').fill('1');
});

await step('a card\'s buttons (Watching included) stay inside it at common widths', async () => {
  for (const width of [1360, 1280, 1200, 1024, 800, 390]) {
    await shopper.setViewportSize({ width, height: 900 });
    const spill = await shopper.evaluate(() => {
      const out = [];
      for (const c of document.querySelectorAll('[data-testid=product-card]')) {
        const box = c.getBoundingClientRect();
        for (const b of c.querySelectorAll('.card-actions > *')) {
          if (b.hidden) continue;
          const r = b.getBoundingClientRect();
          if (r.right > box.right - 1 || r.left < box.left + 1)
            out.push(`${c.dataset.title}: "${b.textContent}"`);
        }
      }
      return out;
    });
    if (spill.length) throw new Error(`at ${width} px: ${spill.join(', ')}`);
  }
  await shopper.setViewportSize({ width: 1360, height: 900 });
});

await step('the bus ticker shows whole event type names', async () => {
  await shopper.locator('[data-testid=ticker-type]').first().waitFor({ timeout: WAIT });
  const cut = await shopper.evaluate(() =>
    [...document.querySelectorAll('[data-testid=ticker-type]')]
      .filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.textContent));
  if (cut.length) throw new Error('cut off: ' + cut.join(', '));
});

await step('an order refused for stock or an unknown product reads so, with no estimate', async () => {
  // The sold-out sample product has no Buy button: ask the API as the page
  // does, then look at the orders list of a fresh page of the same session.
  const page = await shopper.context().newPage();
  page.on('pageerror', (e) => pageErrors.push(`shopper-2: ${e.message}`));
  await page.goto(SHOP, { waitUntil: 'domcontentloaded' });
  const ids = await page.evaluate(async () => {
    const list = await tidings.api('products', '/products?limit=500');
    const deck = list.products.find((p) => p.quantity === 0);
    const order = (productId) => tidings.api('orders', '/orders',
      { method: 'POST', body: { productId, quantity: 1 } });
    return [(await order(deck.productId)).orderId,
            (await order('00000000-0000-4000-8000-000000000000')).orderId];
  });
  await page.reload({ waitUntil: 'domcontentloaded' });
  for (const [id, reason] of [[ids[0], 'out of stock'], [ids[1], 'no such product']]) {
    const row = page.locator(`[data-testid=order][data-order-id="${id}"][data-status=REJECTED]`);
    await row.waitFor({ timeout: WAIT });
    const text = await row.textContent();
    if (!text.includes(reason) || text.includes('≈'))
      throw new Error(`the order row reads "${text}", want "${reason}" and no estimate`);
  }
  await page.close();
});

await step('the shopper changes notification settings', async () => {
  // The saved settings arrive late (as on a slow network): a box ticked
  // meanwhile must not be unticked by them.
  const slow = async (route) => {
    if (route.request().method() === 'GET') await new Promise((r) => setTimeout(r, 1500));
    await route.continue();
  };
  await shopper.route('**/preferences', slow);
  const loaded = shopper.waitForResponse((r) => r.url().endsWith('/preferences') &&
                                         r.request().method() === 'GET', { timeout: WAIT });
  await shopper.click('[data-testid=settings]');
  const dialog = shopper.locator('[data-testid=prefs-dialog]');
  await dialog.waitFor({ timeout: WAIT });
  await shopper.locator('#mute-list input[value=UserLoggedInEvent]').check();
  await shopper.locator('#pref-new-products').check();
  await loaded; // the slow answer has landed (and been applied) by the time of Save
  await shopper.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
  await shopper.unroute('**/preferences', slow);
  await shot(shopper, '06-settings');
  await shopper.click('#prefs-save');
  await shopper.locator('[data-testid=toast]', { hasText: 'Settings saved' }).first()
    .waitFor({ timeout: WAIT });
  // Saved for real: reopening shows them.
  await shopper.click('[data-testid=settings]');
  await shopper.waitForFunction(() =>
    document.querySelector('#mute-list input[value=UserLoggedInEvent]')?.checked &&
    document.querySelector('#pref-new-products').checked, null, { timeout: WAIT });
  await shopper.locator('#prefs-dialog [data-close]').click();
});

await step('the shopper chooses channels and quiet hours; a bad zone is refused', async () => {
  await shopper.click('[data-testid=settings]');
  await shopper.waitForFunction(() => !document.querySelector('#prefs-save').disabled, null,
    { timeout: WAIT });
  if (!(await shopper.locator('#pref-ch-push').isChecked()) ||
      (await shopper.locator('#pref-ch-email').isChecked()))
    throw new Error('channel defaults: push on, email off');
  if ((await shopper.locator('#pref-digest').inputValue()) !== '0')
    throw new Error('digest default: one by one');
  await shopper.locator('#pref-ch-webhook').uncheck();
  await shopper.locator('#pref-ch-email').check();
  await shopper.selectOption('#pref-digest', '15');
  await shopper.locator('#pref-quiet-on').check();
  await shopper.fill('#pref-quiet-start', '22:00');
  await shopper.fill('#pref-quiet-end', '07:00');
  await shopper.fill('#pref-quiet-zone', 'Mars/Olympus_Mons');
  await shopper.click('#prefs-save');
  await shopper.locator('#prefs-error', { hasText: 'timeZone' }).waitFor({ timeout: WAIT });
  await shopper.fill('#pref-quiet-zone', 'Asia/Kathmandu');
  await shopper.click('#prefs-save');
  await shopper.waitForFunction(() => !document.querySelector('#prefs-dialog').open, null,
    { timeout: WAIT });
  await shopper.click('[data-testid=settings]');
  await shopper.waitForFunction(() =>
    !document.querySelector('#prefs-save').disabled &&
    document.querySelector('#pref-quiet-on').checked &&
    document.querySelector('#pref-quiet-zone').value === 'Asia/Kathmandu' &&
    document.querySelector('#pref-quiet-start').value === '22:00' &&
    !document.querySelector('#pref-ch-webhook').checked &&
    document.querySelector('#pref-ch-email').checked &&
    document.querySelector('#pref-digest').value === '15' &&
    document.querySelector('#pref-ch-push').checked, null, { timeout: WAIT });
  await shot(shopper, '06b-channels-quiet');
  // Switch the quiet hours and the digest off again, so the rest of the
  // run's pushes flow one by one.
  await shopper.locator('#pref-quiet-on').uncheck();
  await shopper.selectOption('#pref-digest', '0');
  await shopper.click('#prefs-save');
  await shopper.waitForFunction(() => !document.querySelector('#prefs-dialog').open, null,
    { timeout: WAIT });
});

// ---- the admin -----------------------------------------------------------------

const admin = await newPage('admin');
await step('the admin edits the catalogue; the watcher hears of the price drop', async () => {
  current = admin;
  await admin.goto(SHOP, { waitUntil: 'domcontentloaded' });
  await admin.click('[data-testid=sign-in]');
  await admin.fill('#login-email', 'admin@tidings.local');
  await admin.fill('#login-password', ADMIN_PASSWORD);
  await admin.click('#login-submit');
  await admin.locator('[data-testid=admin-panel]').waitFor({ timeout: WAIT });
  await admin.locator('#admin-rows tr').first().waitFor({ timeout: WAIT });
  // Prices keep their cents in the editor; an empty orders panel says so.
  const kb = await admin.locator('#admin-rows tr[data-title="Mechanical Keyboard"] ' +
                                 'input[aria-label=Price]').inputValue();
  if (kb !== '89.50') throw new Error(`the editor shows the keyboard's price as "${kb}"`);
  await admin.locator('#orders-empty', { hasText: 'No orders yet' }).waitFor({ timeout: WAIT });

  // Lower the watched product's price.
  const row = admin.locator('#admin-rows tr[data-title="Kindle Paperwhite"]');
  await row.locator('input[aria-label=Price]').fill('129.99');
  await row.getByText('Save').click();
  await card(admin, 'Kindle Paperwhite').locator('[data-testid=price]', { hasText: '129.99' })
    .waitFor({ timeout: WAIT });
  // The shopper's page learns of it live. A toast lasts 7 s, so it is
  // looked for now, not after the admin's next edits (slow on a busy box).
  current = shopper;
  await shopper.locator('[data-testid=toast]', { hasText: 'Price drop' }).first()
    .waitFor({ timeout: WAIT });
  current = admin;

  // Add a product, change its stock, delete it.
  await admin.fill('#add-title', 'Desk Lamp');
  await admin.fill('#add-price', '39.90');
  await admin.fill('#add-qty', '3');
  await admin.click('#add-form button[type=submit]');
  await card(admin, 'Desk Lamp').waitFor({ timeout: WAIT });
  const lamp = admin.locator('#admin-rows tr[data-title="Desk Lamp"]');
  await lamp.locator('input[aria-label=Stock]').fill('7');
  await lamp.getByText('Save').click();
  await card(admin, 'Desk Lamp').locator('[data-testid=stock]', { hasText: '7 in stock' })
    .waitFor({ timeout: WAIT });
  await shot(admin, '07-admin');
  await lamp.getByText('Delete').click();
  await card(admin, 'Desk Lamp').waitFor({ state: 'detached', timeout: WAIT });

  // The shopper's page has the new price and the notification in its inbox.
  current = shopper;
  await card(shopper, 'Kindle Paperwhite').locator('[data-testid=price]', { hasText: '129.99' })
    .waitFor({ timeout: WAIT });
  await openInboxAndFind(shopper, 'Price drop: Kindle Paperwhite');
  await shot(shopper, '08-price-drop');
});

// ---- the event flow ------------------------------------------------------------

await step('the event-flow page is for admins only', async () => {
  current = shopper;
  await shopper.goto(`${SHOP.replace(/\/$/, '')}/flow.html#trace=${approvedId}`,
                     { waitUntil: 'domcontentloaded' });
  await shopper.locator('[data-testid=admin-only]').waitFor({ timeout: WAIT });
  if (await shopper.locator('[data-testid=event-row]').count())
    throw new Error('a shopper sees the event table');
  await shot(shopper, '09-flow-admin-only');
});

await step('the event-flow page draws the approved order\'s causal chain', async () => {
  current = admin;
  await admin.goto(`${SHOP.replace(/\/$/, '')}/flow.html#trace=${approvedId}`,
                     { waitUntil: 'domcontentloaded' });
  for (const type of ['OrderCreatedEvent', 'ProductReservedEvent', 'PaymentProcessedEvent',
                      'OrderApprovedEvent', 'NotificationCreatedEvent']) {
    await admin.locator(`[data-testid=chain-event][data-type=${type}]`).first()
      .waitFor({ timeout: WAIT });
  }
  await admin.locator('[data-testid=trace-outcome]', { hasText: 'APPROVED' })
    .waitFor({ timeout: WAIT });
  // Causal order: the reservation hangs under the order, the payment under it.
  const types = await admin.locator('[data-testid=chain-event]').evaluateAll(
    (rows) => rows.map((r) => r.dataset.type));
  const at = (t) => types.indexOf(t);
  if (!(at('OrderCreatedEvent') < at('ProductReservedEvent') &&
        at('ProductReservedEvent') < at('PaymentProcessedEvent') &&
        at('PaymentProcessedEvent') < at('OrderApprovedEvent')))
    throw new Error('chain out of causal order: ' + types.join(', '));
  const depth = await admin.locator('[data-testid=chain-event][data-type=OrderApprovedEvent] .tl-indent span')
    .count();
  if (depth !== 3) throw new Error(`OrderApprovedEvent at depth ${depth}, want 3`);
  // The live table has the saga's events.
  await admin.locator('[data-testid=event-row][data-type=OrderApprovedEvent]').first()
    .waitFor({ timeout: WAIT });
  // Open one event's details.
  await admin.locator('[data-testid=chain-event][data-type=PaymentProcessedEvent]').first().click();
  await admin.locator('.tl-detail pre.json').first().waitFor({ timeout: WAIT });
  await shot(admin, '09-flow');
});

await step('the event-flow page follows a changed #trace= link', async () => {
  // Only the hash changes: no page load, the chain must follow anyway.
  await admin.evaluate((id) => { location.hash = '#trace=' + id; }, rejectedId);
  await admin.locator('[data-testid=trace-outcome]', { hasText: 'REJECTED' })
    .waitFor({ timeout: WAIT });
  await admin.locator('[data-testid=chain-event][data-type=PaymentFailedEvent]').first()
    .waitFor({ timeout: WAIT });
});

await step('the event-flow table receives new events live', async () => {
  const users = await admin.evaluate(async () => (await tidings.loadConfig()).services.users);
  const before = await admin.locator('[data-testid=event-row][data-type=UserRegisteredEvent]')
    .count();
  const res = await fetch(users + '/users', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: `grace.${Date.now()}@example.com`, password: 'cobol-rules',
                           name: 'Grace Hopper' }),
  });
  if (res.status !== 201) throw new Error(`POST /users: ${res.status}`);
  await admin.waitForFunction((n) =>
    document.querySelectorAll('[data-testid=event-row][data-type=UserRegisteredEvent]').length > n,
  before, { timeout: WAIT });
  await shot(admin, '10-flow-live');
});

await step('admins see dead letters on the event-flow page and redrive one', async () => {
  // 0090_browser.sh put a record that is no CloudEvent on the orders topic.
  const row = admin.locator('[data-testid=dead-letters] tr[data-key=browser-poison]')
    .first();
  for (let i = 0; i < 60 && !(await row.count()); i++) {
    await admin.click('#dlt-refresh');
    await admin.waitForTimeout(500);
  }
  await row.waitFor({ timeout: WAIT });
  const text = await row.innerText();
  if (!/ce_specversion|CloudEvent/i.test(text)) throw new Error(`no reason shown: ${text}`);
  await row.locator('[data-testid=dlt-redrive]').click();
  await row.locator('[data-testid=dlt-status]', { hasText: 'redriven to tidings.orders' })
    .waitFor({ timeout: WAIT });
  if (!(await row.locator('[data-testid=dlt-redrive]').isDisabled()))
    throw new Error('the redrive button is still enabled after a redrive');
  await shot(admin, '11-flow-dead-letters');
});

await step('no script errors on any page', async () => {
  if (pageErrors.length) throw new Error(pageErrors.join('; '));
});

writeFileSync(join(ART, '0090-console.txt'), consoleLines.join('\n') + '\n');
await browser.close();
console.log(`${passed} passed, 0 failed`);
