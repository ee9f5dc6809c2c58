// The node panel: an image (and the operation that produced it) or an
// operation still running. Tabs: the output (live while running), the
// image's files, a diff against its parent or any image, and details with
// resource usage. The header sets, moves and removes the image's tag and
// cancels a running operation.

import { call, download, followEvents, streamText } from './api.js';
import { data, detail, loadImages, loadOps, producerOf } from './data.js';
import { previewForm } from './preview.js';
import {
  h, $, shortId, duration, bytes, when, isTerminal, badge, toast, decodeText, saveBlob,
} from './util.js';

const TABS = [
  { id: 'output', label: 'Output' },
  { id: 'files', label: 'Files', image: true },
  { id: 'diff', label: 'Diff', image: true },
  { id: 'details', label: 'Details' },
];
const PREVIEW_LIMIT = 512 * 1024;

let target = null; // {image, op}
let tab = 'output';
let abort = null; // cancels the current tab's requests and streams
let hooks = { onClose: () => {}, onRetarget: () => {} };
let filesPath = '/';
let diffAgainst = ''; // '' = parent

/** Wires the panel: onClose() when closed, onRetarget(target) when it moves on. */
export function init(opts) {
  hooks = Object.assign(hooks, opts);
  // Escape closes the panel from anywhere: the tree keeps focus while
  // the panel shows the node Enter opened.
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !e.defaultPrevented && target && !$('panel').hidden) {
      e.preventDefault();
      close();
    }
  });
}

export function current() { return target; }

/** Opens the panel on target ({image, op}); answers whether it changed. */
export function open(t) {
  const same = target && t.image === target.image && t.op === target.op;
  if (same && !$('panel').hidden) return false;
  if (!target || t.image !== target.image) {
    filesPath = '/';
    diffAgainst = '';
  }
  target = { image: t.image || null, op: t.op || null };
  if (target.image && !target.op) {
    target.op = producerOf(data.images.get(target.image));
  }
  if (!target.image && TABS.find((x) => x.id === tab).image) tab = 'output';
  $('panel').hidden = false;
  $('main').classList.add('with-panel');
  renderAll();
  return true;
}

export function close() {
  if (abort) abort.abort();
  abort = null;
  const was = target;
  target = null;
  $('panel').hidden = true;
  $('panel').replaceChildren();
  $('main').classList.remove('with-panel');
  hooks.onClose(was);
}

/** Re-renders the header after data changed (tags, statuses). */
export function refresh() {
  if (!target || $('panel').hidden) return;
  if (target.image && !data.images.has(target.image) && data.images.size) {
    close();
    return;
  }
  // A running operation that produced its image: show the image.
  if (!target.image && target.op) {
    const op = data.ops.get(target.op);
    if (op && op.result_image_uuid && data.images.has(op.result_image_uuid)) {
      target = { image: op.result_image_uuid, op: target.op };
      hooks.onRetarget(target);
    }
  }
  renderHead();
}

function renderAll() {
  const panel = $('panel');
  const head = h('div', { class: 'panel-head', id: 'panel-head' });
  const tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Node views' });
  const body = h('div', { class: 'tabpanel', id: 'panel-body', role: 'tabpanel', tabindex: 0 });
  for (const t of TABS) {
    if (t.image && !target.image) continue;
    const b = h('button', {
      type: 'button', role: 'tab', id: 'tab-' + t.id, 'aria-controls': 'panel-body',
      'aria-selected': t.id === tab ? 'true' : 'false', tabindex: t.id === tab ? 0 : -1,
      onclick: () => showTab(t.id),
    }, t.label);
    tabs.append(b);
  }
  tabs.addEventListener('keydown', (e) => {
    const list = [...tabs.querySelectorAll('[role=tab]')];
    const i = list.indexOf(document.activeElement);
    if (i < 0) return;
    let j = -1;
    if (e.key === 'ArrowRight') j = (i + 1) % list.length;
    else if (e.key === 'ArrowLeft') j = (i - 1 + list.length) % list.length;
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = list.length - 1;
    if (j < 0) return;
    e.preventDefault();
    list[j].focus();
    showTab(list[j].id.slice(4));
  });
  panel.replaceChildren(head, tabs, body);
  renderHead();
  showTab(tab);
}

function renderHead() {
  const head = $('panel-head');
  if (!head || !target) return;
  const im = target.image ? data.images.get(target.image) : null;
  const op = target.op ? data.ops.get(target.op) : null;
  const d = target.op ? data.details.get(target.op) : null;
  const code = d && d.metadata && d.metadata.result && d.metadata.result.state ? d.metadata.result.state.exit_code : undefined;
  const title = im ? (im.tag || 'image ' + shortId(im.uuid)) : 'operation ' + shortId(target.op);

  const facts = h('dl', { class: 'facts' });
  const fact = (k, ...v) => facts.append(h('dt', {}, k), h('dd', {}, ...v));
  if (im) {
    fact('Image', h('code', {}, im.uuid));
    if (im.parent_uuid) {
      const p = data.images.get(im.parent_uuid);
      fact('Parent', p
        ? h('button', { type: 'button', class: 'link', onclick: () => hooks.onRetarget({ image: p.uuid }, true) },
          p.tag || shortId(p.uuid))
        : h('code', {}, shortId(im.parent_uuid)));
    }
    fact('Created', when(im.created_at));
  }
  if (op && !im && op.image_uuid) {
    const src = data.images.get(op.image_uuid);
    fact('Started from', src
      ? h('button', { type: 'button', class: 'link', onclick: () => hooks.onRetarget({ image: src.uuid }, true) },
        src.tag || shortId(src.uuid))
      : h('code', {}, shortId(op.image_uuid)));
  }
  if (op) {
    fact('Operation', h('code', {}, op.uuid));
    if (isTerminal(op.status) && op.duration) fact('Duration', duration(op.duration));
  }

  const children = [
    h('div', { class: 'panel-title' },
      h('h2', { id: 'panel-title', title }, title),
      op ? badge(op, code) : null,
      h('button', { type: 'button', id: 'panel-close', 'aria-label': 'Close panel', title: 'Close (Esc)', onclick: close }, '×')),
    facts,
  ];
  if (im) children.push(tagForm(im));
  if (op && !isTerminal(op.status)) {
    children.push(h('div', {},
      h('button', { type: 'button', class: 'danger', id: 'cancel-op', onclick: () => cancel(op.uuid) }, 'Cancel operation')));
    if (op.kind === 'instance' && op.status === 'EXECUTING') children.push(previewForm(op));
  }
  // Keep focus inside the header across re-renders.
  const activeId = head.contains(document.activeElement) ? document.activeElement.id : '';
  const typed = $('tag-input') ? $('tag-input').value : null;
  const typedFor = $('tag-input') ? $('tag-input').dataset.image : null;
  head.replaceChildren(...children);
  if (typed !== null && typedFor === (im && im.uuid) && activeId === 'tag-input') $('tag-input').value = typed;
  if (activeId && $(activeId)) $(activeId).focus();
}

function tagForm(im) {
  const input = h('input', {
    id: 'tag-input', type: 'text', value: im.tag || '', placeholder: 'e.g. good', autocomplete: 'off',
    spellcheck: 'false', 'data-image': im.uuid, 'aria-describedby': 'tag-help',
  });
  const form = h('form', { class: 'tagform', id: 'tag-form' },
    h('label', { for: 'tag-input' }, 'Tag'), input,
    h('button', { type: 'submit', id: 'tag-set' }, 'Set tag'),
    im.tag ? h('button', { type: 'button', id: 'tag-remove', onclick: () => removeTag(im) }, 'Remove tag') : null,
    h('span', { id: 'tag-help', class: 'muted' }, 'A tag names one image: setting it here moves it.'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    setTag(im, input.value.trim());
  });
  return form;
}

async function setTag(im, tag) {
  if (!tag) {
    toast('Type a tag first', true);
    return;
  }
  const from = [...data.images.values()].find((x) => x.tag === tag && x.uuid !== im.uuid);
  try {
    await call(`/v1/images/${im.uuid}/tag`, { method: 'PATCH', body: { tag } });
    await loadImages();
    toast(from ? `Moved tag ${tag} from ${shortId(from.uuid)}` : `Tagged ${tag}`);
  } catch (e) {
    toast('Tag not set: ' + e.message, true);
  }
}

async function removeTag(im) {
  try {
    await call(`/v1/images/${im.uuid}/tag`, { method: 'DELETE' });
    await loadImages();
    toast(`Removed tag ${im.tag}`);
  } catch (e) {
    toast('Tag not removed: ' + e.message, true);
  }
}

export async function cancel(opId) {
  try {
    await call('/v1/operations/' + opId, { method: 'DELETE' });
    toast('Cancelling ' + shortId(opId));
    await loadOps();
  } catch (e) {
    toast('Not cancelled: ' + e.message, true);
  }
}

function showTab(id) {
  tab = id;
  for (const b of document.querySelectorAll('#panel [role=tab]')) {
    const on = b.id === 'tab-' + id;
    b.setAttribute('aria-selected', on ? 'true' : 'false');
    b.tabIndex = on ? 0 : -1;
  }
  const body = $('panel-body');
  body.setAttribute('aria-labelledby', 'tab-' + id);
  if (abort) abort.abort();
  abort = new AbortController();
  const signal = abort.signal;
  body.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  const run = { output: showOutput, files: showFiles, diff: showDiff, details: showDetails }[id];
  run(body, signal).catch((e) => {
    if (signal.aborted || e.name === 'AbortError') return;
    body.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message));
  });
}

// Output.

function streamBlock(name, text, opts = {}) {
  const pre = h('pre', {
    class: 'out' + (name === 'stderr' ? ' err' : '') + (text ? '' : ' empty-out'),
    id: 'out-' + name, tabindex: 0, 'aria-label': name,
  }, text || '(empty)');
  return h('section', { class: 'stream' },
    h('h3', {}, name, opts.truncated ? h('span', { class: 'badge b-warn' }, 'truncated') : null,
      opts.live ? h('span', { class: 'badge b-run' }, 'live') : null),
    pre);
}

async function showOutput(body, signal) {
  if (!target.op) {
    body.replaceChildren(h('p', {}, 'This image was imported: no process ran, so there is no output.'));
    return;
  }
  const d = await detail(target.op);
  if (signal.aborted) return;
  if (d.kind === 'image_import') {
    const url = d.metadata && d.metadata.registry ? d.metadata.registry.url : '';
    body.replaceChildren(h('p', {}, 'Imported from ', h('code', {}, url || 'an upload'), '; no process ran, so there is no output.'));
    return;
  }
  if (isTerminal(d.status)) {
    renderResult(body, d);
    return;
  }
  await live(body, d, signal);
}

function renderResult(body, d) {
  const r = d.metadata && d.metadata.result;
  const out = [];
  if (d.error) out.push(h('p', { class: 'error' }, d.error));
  if (!r) {
    out.push(h('p', { class: 'muted' }, d.status === 'CANCELLED' ? 'Cancelled before the process ran.' : 'No result recorded.'));
    body.replaceChildren(...out);
    return;
  }
  const st = r.state || {};
  const facts = [`exit code ${st.exit_code}`];
  if (st.signal > 0) facts.push(`signal ${st.signal}`);
  if (st.timed_out) facts.push('timed out');
  out.push(h('p', { id: 'exit-line' }, h('strong', {}, facts.join(' · ')), d.duration ? ` after ${duration(d.duration)}` : ''));
  out.push(streamBlock('stdout', streamText(r.stdout), { truncated: r.stdout && r.stdout.truncated }));
  out.push(streamBlock('stderr', streamText(r.stderr), { truncated: r.stderr && r.stderr.truncated }));
  body.replaceChildren(...out);
}

async function live(body, d, signal) {
  const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  const status = h('p', { id: 'exit-line', class: 'muted' }, 'Running… output appears as it is written.');
  const outBlock = streamBlock('stdout', '', { live: true });
  const errBlock = streamBlock('stderr', '', { live: true });
  body.replaceChildren(status, outBlock, errBlock);
  const pres = { stdout: outBlock.querySelector('pre'), stderr: errBlock.querySelector('pre') };
  const started = { stdout: false, stderr: false };
  let completed = false;
  await followEvents(d.uuid, (ev) => {
    if (ev.type === 'stdout' || ev.type === 'stderr') {
      const pre = pres[ev.type];
      const v = ev.data || {};
      let text;
      if ((v.encoding || '').toLowerCase() === 'base64') {
        const bin = atob(v.value || '');
        const b = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) b[i] = bin.charCodeAt(i);
        text = decoders[ev.type].decode(b, { stream: true });
      } else {
        text = v.value || '';
      }
      if (!started[ev.type]) {
        started[ev.type] = true;
        pre.textContent = '';
        pre.classList.remove('empty-out');
      }
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(text);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    } else if (ev.type === 'completion') {
      completed = true;
    }
  }, signal);
  if (signal.aborted) return;
  // Finished: show the recorded result, and the new image when there is one.
  const fin = await detail(d.uuid, true);
  if (signal.aborted) return;
  await loadOps().catch(() => {});
  if (signal.aborted) return;
  if (completed || isTerminal(fin.status)) {
    renderResult(body, fin);
    refresh();
    return;
  }
  // The stream dropped before the end: follow again (the log replays).
  setTimeout(() => { if (!signal.aborted) showTab('output'); }, 1000);
}

// Files.

async function showFiles(body, signal) {
  const id = target.image;
  const path = filesPath;
  const list = await call(`/v1/inspect/${id}/list`, { query: { path }, signal });
  if (signal.aborted) return;
  const files = (list.files || []).slice().sort((a, b) => (b.is_dir - a.is_dir) || (a.path < b.path ? -1 : 1));
  const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Path' });
  const parts = list.path.split('/').filter(Boolean);
  const go = (p) => {
    filesPath = p;
    showTab('files');
  };
  crumbs.append(h('button', { type: 'button', class: 'link', onclick: () => go('/') }, '/'));
  parts.forEach((part, i) => {
    const p = '/' + parts.slice(0, i + 1).join('/');
    if (i > 0) crumbs.append('/');
    crumbs.append(i === parts.length - 1
      ? h('span', { 'aria-current': 'location' }, part)
      : h('button', { type: 'button', class: 'link', onclick: () => go(p) }, part));
  });
  const join = (name) => (list.path === '/' ? '' : list.path) + '/' + name;
  const tbody = h('tbody');
  if (list.path !== '/') {
    tbody.append(h('tr', {}, h('td', {}, h('button', {
      type: 'button', class: 'link', onclick: () => go(list.path.replace(/\/[^/]*$/, '') || '/'),
    }, '..')), h('td'), h('td'), h('td')));
  }
  const viewer = h('div', { class: 'viewer', id: 'file-viewer', hidden: true });
  for (const f of files) {
    const full = join(f.path);
    let name;
    if (f.is_dir) {
      name = h('button', { type: 'button', class: 'link', onclick: () => go(full) }, f.path + '/');
    } else if (f.is_symlink) {
      name = h('span', { class: 'mono' }, f.path, h('span', { class: 'muted' }, ' → ' + f.symlink_to));
    } else {
      name = h('button', { type: 'button', class: 'link', onclick: () => viewFile(viewer, id, full, f) }, f.path);
    }
    tbody.append(h('tr', {},
      h('td', {}, name),
      h('td', { class: 'num' }, f.is_dir ? '' : bytes(f.size)),
      h('td', { class: 'mono' }, modeString(f.mode)),
      h('td', { class: 'num' }, when(f.mtime * 1000))));
  }
  const table = h('table', { class: 'files' },
    h('caption', { class: 'sr-only' }, 'Files in ' + list.path),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Size'),
      h('th', { scope: 'col' }, 'Mode'), h('th', { scope: 'col' }, 'Modified'))),
    tbody);
  body.replaceChildren(crumbs, files.length ? table : h('p', { class: 'muted' }, 'Empty directory.'), viewer);
}

function modeString(mode) {
  const t = { 0o040000: 'd', 0o120000: 'l', 0o100000: '-', 0o020000: 'c', 0o060000: 'b', 0o010000: 'p', 0o140000: 's' }[mode & 0o170000] || '?';
  const rwx = 'rwxrwxrwx';
  let s = t;
  for (let i = 0; i < 9; i++) s += mode & (1 << (8 - i)) ? rwx[i] : '-';
  return s;
}

async function viewFile(viewer, id, path, f) {
  const name = path.split('/').pop();
  const dl = h('button', {
    type: 'button', id: 'file-download', onclick: async () => {
      try {
        saveBlob(await download(id, path), name);
      } catch (e) {
        toast('Download failed: ' + e.message, true);
      }
    },
  }, 'Download');
  const head = h('div', { class: 'viewer-head' }, h('h3', {}, path), h('span', { class: 'muted' }, bytes(f.size)), dl);
  viewer.hidden = false;
  if (f.size > PREVIEW_LIMIT) {
    viewer.replaceChildren(head, h('p', { class: 'muted' }, 'Too large to preview here: download it instead.'));
    return;
  }
  viewer.replaceChildren(head, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const blob = await download(id, path);
    const text = decodeText(await blob.arrayBuffer());
    viewer.replaceChildren(head, text === null
      ? h('p', { class: 'muted' }, 'Binary file: download it to look inside.')
      : h('pre', { class: 'file', id: 'file-content', tabindex: 0, 'aria-label': 'Contents of ' + path }, text || '(empty file)'));
  } catch (e) {
    viewer.replaceChildren(head, h('p', { class: 'error' }, e.message));
  }
  viewer.scrollIntoView({ block: 'nearest' });
}

// Diff.

async function showDiff(body, signal) {
  const im = data.images.get(target.image);
  const select = h('select', { id: 'diff-against' });
  if (im && im.parent_uuid) select.append(h('option', { value: '' }, 'its parent'));
  const others = [...data.images.values()].filter((x) => x.uuid !== target.image)
    .sort((a, b) => (a.tag || '~' + a.created_at).localeCompare(b.tag || '~' + b.created_at));
  for (const o of others) {
    select.append(h('option', { value: o.uuid }, (o.tag ? o.tag + ' — ' : '') + shortId(o.uuid)));
  }
  if (!diffAgainst && !(im && im.parent_uuid)) {
    select.prepend(h('option', { value: '', disabled: true }, 'choose an image'));
  }
  select.value = diffAgainst;
  select.addEventListener('change', () => {
    diffAgainst = select.value;
    showTab('diff');
  });
  const bar = h('div', { class: 'diffbar' }, h('label', { for: 'diff-against' }, 'Changes from'), select,
    h('span', { class: 'muted' }, 'to this image'));
  const result = h('div', { id: 'diff-result' });
  body.replaceChildren(bar, result);
  if (!diffAgainst && !(im && im.parent_uuid)) {
    result.append(h('p', { class: 'muted' }, 'This image has no parent: choose an image to compare with.'));
    return;
  }
  result.append(h('p', { class: 'muted' }, 'Comparing…'));
  const diff = await call(`/v1/images/${target.image}/diff`, { query: { from: diffAgainst || undefined }, signal });
  if (signal.aborted) return;
  renderDiff(result, diff);
}

function renderDiff(result, diff) {
  const changes = diff.changes || [];
  const count = (k) => changes.filter((c) => c.kind === k).length;
  const summary = h('p', { class: 'summary', id: 'diff-summary' },
    changes.length ? `${changes.length} change${changes.length === 1 ? '' : 's'}: ${count('added')} added, ${count('modified')} modified, ${count('deleted')} deleted`
      : 'No changes.');
  const list = h('ul', { class: 'changes' });
  for (const c of changes) {
    const sign = { added: '+', modified: '~', deleted: '−' }[c.kind] || '?';
    const size = c.kind === 'added' ? bytes(c.new_size) : c.kind === 'deleted' ? bytes(c.old_size) : `${bytes(c.old_size)} → ${bytes(c.new_size)}`;
    const head = h('div', { class: 'change-head k-' + c.kind },
      h('span', { 'aria-hidden': 'true' }, sign), h('span', { class: 'sr-only' }, c.kind),
      h('span', { class: 'path' }, c.path + (c.type === 'dir' ? '/' : '')),
      h('span', {}, c.type === 'file' ? size : c.type));
    const li = h('li', { 'data-path': c.path, 'data-kind': c.kind }, head);
    if (c.diff) li.append(udiff(c.diff));
    list.append(li);
  }
  result.replaceChildren(summary, list);
}

function udiff(text) {
  const pre = h('pre', { class: 'udiff', tabindex: 0 });
  for (const line of text.replace(/\n$/, '').split('\n')) {
    let cls = '';
    if (line.startsWith('@@')) cls = 'hunk';
    else if (line.startsWith('+') && !line.startsWith('+++')) cls = 'add';
    else if (line.startsWith('-') && !line.startsWith('---')) cls = 'del';
    pre.append(cls ? h('span', { class: cls }, line) : line + '\n');
  }
  return pre;
}

// Details.

async function showDetails(body, signal) {
  const rows = [];
  const row = (k, v) => rows.push(h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)));
  const im = target.image ? data.images.get(target.image) : null;
  if (im) {
    row('Image', h('code', {}, im.uuid));
    row('Tag', im.tag || '—');
    row('Depth', String(im.depth || 0));
    if (im.layer_bytes) row('Layer size', bytes(im.layer_bytes));
    row('Created', when(im.created_at));
  }
  let d = null;
  if (target.op) {
    d = await detail(target.op);
    if (signal.aborted) return;
  }
  const out = [h('table', { class: 'kv', id: 'details-image' }, h('tbody', {}, ...rows))];
  if (d) {
    const m = d.metadata || {};
    const r = [];
    const add = (k, v) => r.push(h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)));
    add('Operation', h('code', {}, d.uuid));
    add('Kind', d.kind);
    add('Status', badge(d, m.result && m.result.state ? m.result.state.exit_code : undefined));
    if (d.error) add('Error', d.error);
    add('Created', when(d.created_at));
    if (d.duration) add('Duration', duration(d.duration));
    if (d.kind === 'instance') {
      add('Command', h('code', {}, m.command + (m.args && m.args.length ? ' ' + m.args.join(' ') : '')));
      add('Shell', m.shell ? 'yes' : 'no');
      if (m.cwd) add('Working directory', h('code', {}, m.cwd));
      add('Disposable', m.disposable ? 'yes' : 'no');
      if (m.runtime) add('Runtime', m.runtime);
      if (m.timeout) add('Timeout', duration(m.timeout));
      if (m.image) add('Source image', h('code', {}, m.image));
    } else if (m.registry) {
      add('Imported from', h('code', {}, m.registry.url));
    }
    if (d.image_size) add('Result image size', bytes(d.image_size));
    out.push(h('h3', {}, 'Operation'), h('table', { class: 'kv', id: 'details-op' }, h('tbody', {}, ...r)));
    const res = m.result && m.result.resources;
    if (res) {
      const rr = [];
      const addr = (k, v) => rr.push(h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)));
      addr('Wall time', duration(res.elapsed_time || res.monotonic_time));
      addr('User CPU', duration(res.user_cpu_time));
      addr('System CPU', duration(res.system_cpu_time));
      addr('Peak memory (max RSS)', bytes((res.max_rss || 0) * 1024));
      addr('Block I/O (in / out)', `${res.block_input} / ${res.block_output}`);
      addr('Page faults (minor / major)', `${res.page_faults} / ${res.page_faults_io}`);
      addr('Context switches (vol. / invol.)', `${res.voluntary_switches} / ${res.involuntary_switches}`);
      out.push(h('h3', {}, 'Resource usage'), h('table', { class: 'kv', id: 'details-resources' }, h('tbody', {}, ...rr)));
    }
  }
  body.replaceChildren(...out.flatMap((x) => [x, h('div', { class: 'gap' })]));
}

