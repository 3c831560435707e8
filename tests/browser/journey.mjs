// The user's journey in a real browser (Debian's headless Chromium): open the approval link,
// continue to the provider, log in, consent there, then approve or deny on the gateway's page.
//   node journey.mjs <link> <login> <approve|deny|none> [screenshot-dir]
// Prints one JSON line: {"title": <final page heading>, "stage": <where it stopped>}.
import { chromium } from 'playwright-core';

const [link, login, decision, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const out = (o) => console.log(JSON.stringify(o));
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 760 }, deviceScaleFactor: 1 });
  const resp = await page.goto(link);
  if (resp.status() !== 200) {
    out({ stage: 'link', status: resp.status(), title: await page.textContent('h1') });
    process.exit(0);
  }
  // The countdown runs (its script is allowed by hash in the page's CSP).
  await page.waitForFunction(() => /^\d+:\d\d$/.test(document.getElementById('countdown').textContent));
  const countdown = await page.textContent('#countdown');
  if (shots) await page.screenshot({ path: `${shots}/device-page.png`, fullPage: true });
  await page.click('#continue');
  // The provider's development login form, then its consent form.
  await page.waitForSelector('input[name="login"]');
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any');
  await page.click('button[type="submit"]');
  await page.waitForLoadState();
  if (await page.$('input[name="prompt"][value="consent"]')) {
    await page.click('button[type="submit"]');
  }
  // Back at the gateway: the consent page, or a refusal.
  await page.waitForSelector('main h1');
  if (!(await page.$('#approve'))) {
    out({ stage: 'callback', title: await page.textContent('main h1') });
    process.exit(0);
  }
  if (shots) await page.screenshot({ path: `${shots}/consent-page.png`, fullPage: true });
  if (decision === 'none') {
    out({ stage: 'consent', title: await page.textContent('main h1') });
    process.exit(0);
  }
  await page.click(decision === 'deny' ? '#deny' : '#approve');
  await page.waitForSelector('#title');
  out({ stage: 'done', title: await page.textContent('#title'), countdown });
} finally {
  await browser.close();
}
