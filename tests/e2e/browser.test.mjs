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

await step('the shopper changes notification settings', async () => {
  await shopper.click('[data-testid=settings]');
  const dialog = shopper.locator('[data-testid=prefs-dialog]');
  await dialog.waitFor({ timeout: WAIT });
  await shopper.locator('#mute-list input[value=UserLoggedInEvent]').check();
  await shopper.locator('#pref-new-products').check();
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

  // Lower the watched product's price.
  const row = admin.locator('#admin-rows tr[data-title="Kindle Paperwhite"]');
  await row.locator('input[aria-label=Price]').fill('129.99');
  await row.getByText('Save').click();
  await card(admin, 'Kindle Paperwhite').locator('[data-testid=price]', { hasText: '129.99' })
    .waitFor({ timeout: WAIT });

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

  // The shopper's page learns of the price drop live.
  current = shopper;
  await shopper.locator('[data-testid=toast]', { hasText: 'Price drop' }).first()
    .waitFor({ timeout: WAIT });
  await card(shopper, 'Kindle Paperwhite').locator('[data-testid=price]', { hasText: '129.99' })
    .waitFor({ timeout: WAIT });
  await openInboxAndFind(shopper, 'Price drop: Kindle Paperwhite');
  await shot(shopper, '08-price-drop');
});

// ---- the event flow ------------------------------------------------------------

await step('the event-flow page draws the approved order\'s causal chain', async () => {
  current = shopper;
  await shopper.goto(`${SHOP.replace(/\/$/, '')}/flow.html#trace=${approvedId}`,
                     { waitUntil: 'domcontentloaded' });
  for (const type of ['OrderCreatedEvent', 'ProductReservedEvent', 'PaymentProcessedEvent',
                      'OrderApprovedEvent', 'NotificationCreatedEvent']) {
    await shopper.locator(`[data-testid=chain-event][data-type=${type}]`).first()
      .waitFor({ timeout: WAIT });
  }
  await shopper.locator('[data-testid=trace-outcome]', { hasText: 'APPROVED' })
    .waitFor({ timeout: WAIT });
  // Causal order: the reservation hangs under the order, the payment under it.
  const types = await shopper.locator('[data-testid=chain-event]').evaluateAll(
    (rows) => rows.map((r) => r.dataset.type));
  const at = (t) => types.indexOf(t);
  if (!(at('OrderCreatedEvent') < at('ProductReservedEvent') &&
        at('ProductReservedEvent') < at('PaymentProcessedEvent') &&
        at('PaymentProcessedEvent') < at('OrderApprovedEvent')))
    throw new Error('chain out of causal order: ' + types.join(', '));
  const depth = await shopper.locator('[data-testid=chain-event][data-type=OrderApprovedEvent] .tl-indent span')
    .count();
  if (depth !== 3) throw new Error(`OrderApprovedEvent at depth ${depth}, want 3`);
  // The live table has the saga's events.
  await shopper.locator('[data-testid=event-row][data-type=OrderApprovedEvent]').first()
    .waitFor({ timeout: WAIT });
  // Open one event's details.
  await shopper.locator('[data-testid=chain-event][data-type=PaymentProcessedEvent]').first().click();
  await shopper.locator('.tl-detail pre.json').first().waitFor({ timeout: WAIT });
  await shot(shopper, '09-flow');
});

await step('the event-flow table receives new events live', async () => {
  const users = await shopper.evaluate(async () => (await tidings.loadConfig()).services.users);
  const before = await shopper.locator('[data-testid=event-row][data-type=UserRegisteredEvent]')
    .count();
  const res = await fetch(users + '/users', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: `grace.${Date.now()}@example.com`, password: 'cobol-rules',
                           name: 'Grace Hopper' }),
  });
  if (res.status !== 201) throw new Error(`POST /users: ${res.status}`);
  await shopper.waitForFunction((n) =>
    document.querySelectorAll('[data-testid=event-row][data-type=UserRegisteredEvent]').length > n,
  before, { timeout: WAIT });
  await shot(shopper, '10-flow-live');
});

await step('no script errors on any page', async () => {
  if (pageErrors.length) throw new Error(pageErrors.join('; '));
});

writeFileSync(join(ART, '0090-console.txt'), consoleLines.join('\n') + '\n');
await browser.close();
console.log(`${passed} passed, 0 failed`);
