#!/usr/bin/env node
// End-to-end test of arbor's web UI in headless Chromium.
//
//   node ui.test.mjs <url> <token> <screenshot-dir>
//
// <url> serves the UI at / and the API at /v1 (one origin); <token> is an
// API token. ARBOR_E2E_TREE describes the tree the caller built (see
// ../e2e_test.go, which runs this script). Uses Debian's /usr/bin/chromium
// through playwright-core; runs `npm ci` here first when node_modules is
// missing (scripts/setup.sh runs `npm ci --prefix internal/webui/e2e`).
// Prints one line per step and a closing "N passed, N failed" line; exits
// non-zero on failure.

import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [url, token, shotDir] = process.argv.slice(2);
if (!url || !token || !shotDir) {
  console.error('usage: node ui.test.mjs <url> <token> <screenshot-dir>');
  process.exit(2);
}
const tree = JSON.parse(process.env.ARBOR_E2E_TREE || 'null');
if (!tree) {
  console.error('ARBOR_E2E_TREE is not set: run this through go test ./internal/webui/ -run TestBrowser');
  process.exit(2);
}

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'playwright-core'))) {
  console.log('installing playwright-core: npm ci');
  execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: here, stdio: 'inherit' });
}
const { chromium } = await import('playwright-core');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const T = 15000; // default wait, ms
fs.mkdirSync(shotDir, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'arbor-e2e-profile-'));

const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1400, height: 860 },
  acceptDownloads: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
ctx.setDefaultTimeout(T);
const page = ctx.pages()[0] || (await ctx.newPage());

// Everything the page reports as wrong fails the run at the end.
const problems = [];
page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`); });
page.on('requestfailed', (r) => {
  const f = r.failure();
  if (f && f.errorText !== 'net::ERR_ABORTED') problems.push(`request failed: ${r.url()}: ${f.errorText}`);
});

let passed = 0;
let failed = 0;
let shots = 0;

async function shot(name) {
  const file = path.join(shotDir, `${String(++shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.stack || e.message}`);
    try { console.log('     screenshot: ' + (await shot('failed-' + name.replace(/\W+/g, '-')))); } catch (_) { /* closed */ }
    throw e;
  }
}

const node = (id) => page.locator(`#tree .node[data-id="${id}"]`);
const active = () => page.evaluate(() => {
  const a = document.activeElement;
  return a && a.dataset ? a.dataset.id || a.id || a.tagName : null;
});
async function waitFor(fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: T, polling: 100 });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}`);
  }
}
async function api(p, init = {}) {
  const r = await fetch(url + p, { ...init, headers: { Authorization: 'Bearer ' + token, ...(init.headers || {}) } });
  assert.ok(r.ok, `${p}: HTTP ${r.status}`);
  return r.json();
}

// Contrast of every visible text against what is behind it (WCAG 2:
// 4.5:1, or 3:1 for large text).
async function checkContrast(where) {
  const bad = await page.evaluate(() => {
    const parse = (c) => {
      const m = /rgba?\(([^)]+)\)/.exec(c || '');
      if (!m) return null;
      const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
    };
    const blend = (top, bot) => ({
      r: top.r * top.a + bot.r * (1 - top.a), g: top.g * top.a + bot.g * (1 - top.a),
      b: top.b * top.a + bot.b * (1 - top.a), a: 1,
    });
    const lum = ({ r, g, b }) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const ratio = (a, b) => {
      const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
      return (x + 0.05) / (y + 0.05);
    };
    const htmlBg = (el) => {
      const layers = [];
      for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c && c.a > 0) {
          layers.push(c);
          if (c.a >= 1) break;
        }
      }
      let bg = { r: 255, g: 255, b: 255, a: 1 };
      for (let i = layers.length - 1; i >= 0; i--) bg = blend(layers[i], bg);
      return bg;
    };
    const svgBg = (el) => {
      const g = el.closest('.node');
      if (!g) return htmlBg(el.ownerSVGElement);
      const rect = el.classList.contains('tagtext') ? g.querySelector('.tagchip') : g.querySelector('.box');
      return blend(parse(getComputedStyle(rect).fill), htmlBg(el.ownerSVGElement));
    };
    const out = [];
    const seen = new Set();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let t = walker.nextNode(); t; t = walker.nextNode()) {
      const el = t.parentElement;
      if (!el || seen.has(el) || !t.textContent.trim()) continue;
      seen.add(el);
      if (el.closest('[hidden], option, title, .sr-only, script, style')) continue;
      const r = el.getBoundingClientRect();
      if (r.width < 2 || r.height < 2 || r.bottom < 0 || r.top > innerHeight || r.right < 0 || r.left > innerWidth) continue;
      const cs = getComputedStyle(el);
      if (cs.visibility !== 'visible' || Number(cs.opacity) === 0) continue;
      if (el.closest('.toast') && !el.closest('.toast.show')) continue;
      const isSvg = el instanceof SVGElement;
      const bg = isSvg ? svgBg(el) : htmlBg(el);
      let fg = parse(isSvg ? cs.fill : cs.color);
      if (!fg) continue;
      if (fg.a < 1) fg = blend(fg, bg);
      const size = parseFloat(cs.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(cs.fontWeight) >= 700);
      const want = large ? 3 : 4.5;
      const got = ratio(fg, bg);
      if (got < want) out.push(`${got.toFixed(2)} < ${want} for "${t.textContent.trim().slice(0, 40)}" (${el.tagName.toLowerCase()}.${el.getAttribute('class') || ''})`);
    }
    return out;
  });
  assert.deepEqual(bad, [], `low contrast ${where}:\n  ${bad.join('\n  ')}`);
}

let exitCode = 0;
try {
  await step('sign in with the token', async () => {
    await page.goto(url);
    await page.locator('#token').waitFor({ state: 'visible' });
    await checkContrast('on the sign-in page');
    await shot('sign-in');
    await page.fill('#token', token);
    await page.press('#token', 'Enter');
    await page.locator('#tree-view').waitFor({ state: 'visible' });
    const stored = await page.evaluate(() => sessionStorage.getItem('arbor.token'));
    assert.equal(stored, token, 'token kept in sessionStorage');
  });

  await step('the tree shows every image, its tag, command, exit code and status', async () => {
    const want = (await api('/v1/images?limit=1000')).images.length;
    assert.equal(want, 5, 'the API lists the 5 images the test built');
    await waitFor((n) => document.querySelectorAll('#tree .node[data-kind=image]').length === n, want, `${want} image nodes`);
    await node('op:' + tree.running).waitFor();
    const tags = await page.$$eval('#tree .node[data-tag]', (els) => els.map((e) => e.dataset.tag).sort());
    assert.deepEqual(tags, ['busybox:latest', 'env', 'fix-a', 'fix-b']);
    // Commands and exit codes arrive with each operation's details.
    await waitFor((id) => (document.querySelector(`#tree .node[data-id="${id}"]`) || {}).textContent?.includes('mkdir -p /work'), tree.env, 'the env node to show its command');
    await waitFor((id) => document.querySelector(`#tree .node[data-id="${id}"]`)?.textContent.includes('exit 3'), tree.fix_b, 'fix-b to show exit 3');
    assert.ok(await node(tree.fix_b).evaluate((e) => e.classList.contains('s-warn')), 'fix-b coloured as non-zero exit');
    assert.ok(await node(tree.fix_a).evaluate((e) => e.classList.contains('s-ok')), 'fix-a coloured as success');
    assert.ok(await node(tree.base).evaluate((e) => e.classList.contains('s-import')), 'the base coloured as an import');
    assert.ok(await node('op:' + tree.running).evaluate((e) => e.classList.contains('s-run') && e.textContent.includes('running')), 'the running operation drawn as running');
    assert.match(await node(tree.fix_a).textContent(), /\d+(\.\d+)? (ms|s)/, 'fix-a shows a duration');
    // Children sit right of their parent.
    const xs = await page.evaluate((ids) => ids.map((id) => Number(/translate\(([-\d.]+)/.exec(
      document.querySelector(`#tree .node[data-id="${id}"]`).getAttribute('transform'))[1])), [tree.base, tree.env, tree.fix_c]);
    assert.ok(xs[0] < xs[1] && xs[1] < xs[2], `left-to-right lineage: x = ${xs}`);
    assert.equal(await page.locator('#tree path.edge').count(), 5, 'one edge per parent link');
    await shot('tree');
  });

  await step('opening a node shows its stdout, stderr and exit code', async () => {
    await node(tree.fix_a).click();
    await page.locator('#panel-title').waitFor();
    assert.equal(await page.textContent('#panel-title'), 'fix-a');
    await waitFor(() => document.querySelector('#out-stdout')?.textContent.includes('fix a'), null, 'stdout "fix a"');
    assert.match(await page.textContent('#out-stderr'), /warn a/);
    assert.match(await page.textContent('#exit-line'), /exit code 0/);
    assert.ok(page.url().includes('#/tree/image/' + tree.fix_a), `route names the image: ${page.url()}`);
    assert.ok(await node(tree.fix_a).evaluate((e) => e.classList.contains('selected')), 'node marked selected');
    await checkContrast('with the output panel open');
    await shot('node-output');
  });

  await step('details show the command and resource usage', async () => {
    await page.click('#tab-details');
    await page.locator('#details-resources').waitFor();
    assert.match(await page.textContent('#details-op'), /echo retry >> \/work\/greeting\.txt/);
    assert.match(await page.textContent('#details-resources'), /Peak memory/);
  });

  await step('the diff against the parent shows the modified file', async () => {
    await page.click('#tab-diff');
    await page.locator('#diff-summary').waitFor();
    const li = page.locator('#diff-result li[data-path="/work/greeting.txt"]');
    assert.equal(await li.getAttribute('data-kind'), 'modified');
    assert.match(await li.locator('pre.udiff').textContent(), /\+retry/);
    await checkContrast('on the diff tab');
    await shot('node-diff');
  });

  await step('a diff against any chosen image', async () => {
    await page.selectOption('#diff-against', tree.fix_c);
    await waitFor(() => document.querySelector('#diff-result li[data-path="/work/greeting.txt"]')?.dataset.kind === 'added', null, 'greeting.txt added relative to fix_c');
  });

  await step("browsing the image's files, viewing and downloading one", async () => {
    await page.click('#tab-files');
    await page.click('#panel-body button:text-is("work/")');
    await page.click('#panel-body button:text-is("greeting.txt")');
    await page.locator('#file-content').waitFor();
    assert.equal(await page.textContent('#file-content'), 'hello\nretry\n');
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#file-download')]);
    assert.equal(dl.suggestedFilename(), 'greeting.txt');
    assert.equal(fs.readFileSync(await dl.path(), 'utf8'), 'hello\nretry\n');
    await shot('node-files');
  });

  await step('a running operation streams its log live', async () => {
    // Off to the right of the narrowed canvas: focusing it pans it into view.
    await node('op:' + tree.running).focus();
    await page.keyboard.press('Enter');
    await waitFor(() => document.querySelector('#out-stdout')?.textContent.includes('live-start'), null, 'live stdout');
    assert.ok(await page.locator('.stream .badge:text-is("live")').count() > 0, 'marked live');
    assert.equal(await page.locator('#cancel-op').count(), 1, 'a cancel button');
    // A port preview: the form makes a signed link to the port.
    await page.fill('#preview-port', '8080');
    await page.click('#preview-open');
    await waitFor((op) => (document.querySelector('#preview-link')?.getAttribute('href') || '').startsWith(`/preview/${op}/8080/`),
      tree.running, 'a preview link');
    await checkContrast('with a live log');
    await shot('live-log');
  });

  await step('moving a tag to another image', async () => {
    await node(tree.fix_c).click();
    await waitFor((id) => document.querySelector('#tag-input')?.dataset.image === id, tree.fix_c, 'the fix_c panel');
    await page.fill('#tag-input', 'fix-a');
    await page.click('#tag-set');
    await waitFor(([to, from]) => document.querySelector(`#tree .node[data-id="${to}"]`)?.dataset.tag === 'fix-a'
      && !document.querySelector(`#tree .node[data-id="${from}"]`)?.dataset.tag, [tree.fix_c, tree.fix_a], 'fix-a to move');
    assert.match(await page.textContent('#toast'), /Moved tag fix-a/);
    assert.equal(await page.textContent('#panel-title'), 'fix-a');
    await shot('tag-moved');
  });

  await step('removing a tag', async () => {
    await node(tree.fix_b).click();
    await page.locator('#tag-remove').waitFor();
    await page.click('#tag-remove');
    await waitFor((id) => !document.querySelector(`#tree .node[data-id="${id}"]`)?.dataset.tag, tree.fix_b, 'fix-b untagged');
  });

  await step('the operations list updates live and cancels', async () => {
    await page.keyboard.press('Escape');
    await page.click('#nav-ops');
    await page.locator('#ops-view').waitFor({ state: 'visible' });
    const row = page.locator(`#ops-body tr[data-op="${tree.running}"]`);
    await row.waitFor();
    assert.equal(await row.getAttribute('data-status'), 'EXECUTING');
    assert.ok(await page.locator('#ops-body tr').count() >= 6, 'the import and five runs');
    await waitFor(() => [...document.querySelectorAll('#ops-body td.cmd')].some((td) => td.textContent.includes('exit 3')), null, 'commands in the list');
    await checkContrast('on the operations list');
    await shot('operations');
    await row.locator('button:text-is("Cancel")').click();
    // The list polls every 2 s.
    await waitFor((id) => document.querySelector(`#ops-body tr[data-op="${id}"]`)?.dataset.status === 'CANCELLED', tree.running, 'the cancelled status');
    assert.equal(await row.locator('button').count(), 0, 'no cancel button once finished');
    await shot('operations-cancelled');
  });

  await step('keyboard: Tab reaches the nodes, arrows move, Enter opens, Escape returns', async () => {
    await page.click('#nav-tree');
    await page.locator('#tree-view').waitFor({ state: 'visible' });
    await waitFor((id) => !document.querySelector(`#tree .node[data-id="op:${id}"]`), tree.running, 'the cancelled operation to leave the tree');
    await page.focus('#zoom-in');
    await page.keyboard.press('Tab');
    assert.equal(await active(), tree.base, 'Tab from the toolbar lands on the root');
    const keys = [['ArrowRight', tree.env], ['ArrowRight', tree.fix_a], ['ArrowDown', tree.fix_b], ['ArrowDown', tree.fix_c],
      ['ArrowUp', tree.fix_b], ['ArrowLeft', tree.env], ['Tab', tree.fix_a], ['Shift+Tab', tree.env], ['ArrowLeft', tree.base]];
    for (const [key, want] of keys) {
      await page.keyboard.press(key);
      assert.equal(await active(), want, `after ${key}`);
    }
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('Enter');
    await waitFor(() => document.querySelector('#panel-title')?.textContent === 'env', null, 'Enter to open env');
    await page.keyboard.press('Escape');
    await waitFor(() => document.querySelector('#panel').hidden, null, 'Escape to close the panel');
    assert.equal(await active(), tree.env, 'focus back on the node');
    await shot('keyboard-focus');
  });

  await step('filter by tag text and by time', async () => {
    await page.fill('#filter-text', 'fix-a');
    await waitFor(() => document.querySelectorAll('#tree .node.match').length === 1, null, 'one match');
    const shown = await page.$$eval('#tree .node', (els) => els.map((e) => e.dataset.id).sort());
    assert.deepEqual(shown, [tree.base, tree.env, tree.fix_c].sort(), 'the match and its ancestors');
    await checkContrast('with a filter dimming context nodes');
    await shot('filtered');
    await page.fill('#filter-text', 'no such thing');
    await page.locator('#tree-empty').waitFor({ state: 'visible' });
    await page.fill('#filter-text', '');
    await page.selectOption('#filter-since', '900');
    await waitFor(() => document.querySelectorAll('#tree .node').length === 5, null, 'all five made in the last 15 minutes');
    await page.selectOption('#filter-since', '0');
  });

  await step('zoom with the wheel and pan by dragging', async () => {
    const tf = () => page.getAttribute('#viewport', 'transform');
    const box = await page.locator('#canvas').boundingBox();
    const before = await tf();
    await page.mouse.move(box.x + box.width - 60, box.y + box.height - 60);
    await page.mouse.wheel(0, -400);
    await waitFor((b) => document.querySelector('#viewport').getAttribute('transform') !== b, before, 'zoom');
    const scale = (s) => Number(/scale\(([\d.]+)\)/.exec(s)[1]);
    const zoomed = await tf();
    assert.ok(scale(zoomed) > scale(before), `zoomed in: ${before} -> ${zoomed}`);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width - 160, box.y + box.height - 100, { steps: 5 });
    await page.mouse.up();
    const panned = await tf();
    assert.notEqual(panned, zoomed, 'panned');
    assert.equal(await page.locator('#panel').isHidden(), true, 'a drag opens nothing');
    await page.click('#zoom-fit');
  });

  await step('no console errors, failed requests or page errors', async () => {
    assert.deepEqual(problems, []);
  });
} catch (_) {
  exitCode = 1;
  if (problems.length) console.log('page problems:\n  ' + problems.join('\n  '));
} finally {
  await ctx.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(`screenshots in ${shotDir}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(exitCode);
