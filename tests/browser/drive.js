// Drives Debian's chromium through playwright-core for the Python tests (tests/harness/browser.py):
// one JSON command per line on stdin, one JSON answer per line on stdout ({id, result} or
// {id, error}). Each command names a browser context ("ctx"), created on first use: separate
// contexts are separate cookie jars (two people, or an attacker and a victim).
//
//   node tests/browser/drive.js      (CHROMIUM_BIN overrides /usr/bin/chromium)
"use strict";
const readline = require("readline");
const { chromium } = require("playwright-core");

const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run"];

async function main() {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium", args: FLAGS });
  const contexts = new Map();
  async function open(name) {
    if (!contexts.has(name)) {
      const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
      const page = await context.newPage();
      contexts.set(name, { context, page });
    }
    return contexts.get(name);
  }

  const ops = {
    // Navigates; the answer has the final status (after redirects) and URL.
    async goto({ ctx, url }) {
      const { page } = await open(ctx);
      const started = Date.now();
      const response = await page.goto(url, { waitUntil: "load" });
      return { status: response ? response.status() : null, url: page.url(), ms: Date.now() - started };
    },
    async fill({ ctx, selector, value }) {
      const { page } = await open(ctx);
      await page.fill(selector, value);
      return true;
    },
    // Clicks and waits for the navigation it starts.
    async submit({ ctx, selector }) {
      const { page } = await open(ctx);
      const [response] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click(selector)]);
      return { status: response ? response.status() : null, url: page.url() };
    },
    // Evaluates a JavaScript expression in the page; returns its (JSON) value.
    async eval({ ctx, expr }) {
      const { page } = await open(ctx);
      return await page.evaluate(expr);
    },
    // Waits until a JavaScript expression is truthy in the page, polling every 100 ms (not
    // waitForFunction: it evals a string, which the dashboard's Content-Security-Policy forbids).
    async wait({ ctx, expr, timeout }) {
      const { page } = await open(ctx);
      const deadline = Date.now() + (timeout || 15000);
      for (;;) {
        if (await page.evaluate(expr)) return true;
        if (Date.now() >= deadline) throw new Error(`timed out waiting for ${expr}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    async screenshot({ ctx, path }) {
      const { page } = await open(ctx);
      await page.screenshot({ path, fullPage: true });
      return path;
    },
    async cookies({ ctx }) {
      const { context } = await open(ctx);
      return await context.cookies();
    },
    async set_cookies({ ctx, cookies }) {
      const { context } = await open(ctx);
      await context.clearCookies();
      if (cookies.length) await context.addCookies(cookies);
      return true;
    },
    // A GET with the context's cookies (what a script on the page could fetch).
    async fetch({ ctx, url }) {
      const { context } = await open(ctx);
      const response = await context.request.get(url, { maxRedirects: 0 });
      return { status: response.status(), body: await response.text(), headers: response.headers() };
    },
    // How long the page took to become interactive (Navigation Timing, ms).
    async timing({ ctx }) {
      const { page } = await open(ctx);
      return await page.evaluate(() => {
        const nav = performance.getEntriesByType("navigation")[0];
        return { domInteractive: nav.domInteractive, domContentLoaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd };
      });
    },
    async close() {
      return true;
    },
  };

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    let answer;
    try {
      const op = ops[command.op];
      if (!op) throw new Error(`unknown op ${command.op}`);
      answer = { id: command.id, result: await op(command) };
    } catch (error) {
      answer = { id: command.id, error: String((error && error.message) || error) };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
    if (command.op === "close") break;
  }
  await browser.close();
}

main().catch((error) => {
  process.stderr.write(`drive.js: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
