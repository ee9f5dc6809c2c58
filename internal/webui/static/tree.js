// The lineage tree: images laid out left to right from their bases, with
// operations still running drawn as dashed nodes under their source image.
// Zoom with the wheel, pan by dragging; Tab and the arrow keys move between
// nodes, Enter opens one.

import { data, commandOf, exitCodeOf, prefetch, producerOf } from './data.js';
import { s, $, shortId, duration, statusClass, statusLabel, isTerminal, parseTime, when } from './util.js';

const W = 244; // node width
const H = 70; // node height
const GX = 64; // gap between columns
const GY = 16; // gap between rows
const MIN_K = 0.15;
const MAX_K = 3;
const AUTO_MIN_K = 0.75;

let svg;
let vp; // the <g> that zoom and pan transform
let nodes = new Map(); // id -> laid-out node
let order = []; // ids in preorder: the Tab order
let view = { x: 24, y: 24, k: 1 };
let userMoved = false; // the user zoomed or panned: stop fitting the tree on changes
let selectedId = null;
let filter = { text: '', since: 0 };
let lastSig = '';
let onOpen = () => {};
let panned = false;

/** Wires the tree's events; open(node) is called when a node is opened. */
export function init(opts) {
  onOpen = opts.onOpen;
  svg = $('tree');
  vp = $('viewport');
  svg.addEventListener('wheel', onWheel, { passive: false });
  svg.addEventListener('pointerdown', onPointerDown);
  svg.addEventListener('click', onClick);
  svg.addEventListener('keydown', onKey);
  svg.addEventListener('focusin', (e) => {
    const g = e.target.closest && e.target.closest('.node');
    if (g) ensureVisible(nodes.get(g.dataset.id));
  });
  $('zoom-in').addEventListener('click', () => zoomBy(1.25));
  $('zoom-out').addEventListener('click', () => zoomBy(0.8));
  $('zoom-fit').addEventListener('click', () => {
    userMoved = false;
    fit();
  });
  // The canvas narrows when the panel opens: keep the tree, or at least
  // the selected node, in view.
  new ResizeObserver(() => {
    if (!userMoved) autoFit();
    else if (selectedId) ensureVisible(nodes.get(selectedId));
  }).observe(svg);
}

export function setFilter(f) {
  filter = Object.assign({}, filter, f);
  render();
}

/** Marks id as the selected node (the one the panel shows). */
export function select(id) {
  selectedId = id;
  for (const g of vp.querySelectorAll('.node')) {
    const on = g.dataset.id === id;
    g.classList.toggle('selected', on);
    g.setAttribute('aria-selected', on ? 'true' : 'false');
  }
}

/** Moves keyboard focus to node id, panning it into view. */
export function focusNode(id) {
  const g = nodeEl(id);
  if (!g) return false;
  g.focus({ preventScroll: true });
  return true;
}

/** The id of the tree node for an image or operation, when drawn. */
export function nodeIdFor(target) {
  if (target.image && nodes.has(target.image)) return target.image;
  if (target.op && nodes.has('op:' + target.op)) return 'op:' + target.op;
  return null;
}

function nodeEl(id) {
  return id ? vp.querySelector(`.node[data-id="${CSS.escape(id)}"]`) : null;
}

// Building and laying out.

function buildForest() {
  const all = new Map();
  for (const im of data.images.values()) {
    all.set(im.uuid, {
      id: im.uuid, kind: 'image', image: im, opId: producerOf(im),
      created: parseTime(im.created_at), children: [], parent: null,
    });
  }
  // Operations in flight: dashed nodes under the image they started from.
  for (const op of data.ops.values()) {
    if (op.kind !== 'instance' || isTerminal(op.status) || !op.image_uuid || !all.has(op.image_uuid)) continue;
    all.set('op:' + op.uuid, {
      id: 'op:' + op.uuid, kind: 'op', image: null, opId: op.uuid, ghostParent: op.image_uuid,
      created: parseTime(op.created_at), children: [], parent: null,
    });
  }
  const roots = [];
  for (const n of all.values()) {
    const pid = n.kind === 'image' ? n.image.parent_uuid : n.ghostParent;
    const p = pid && all.get(pid);
    if (p) {
      n.parent = p;
      p.children.push(n);
    } else {
      roots.push(n);
    }
  }
  const byCreated = (a, b) => a.created - b.created || (a.id < b.id ? -1 : 1);
  roots.sort(byCreated);
  for (const n of all.values()) n.children.sort(byCreated);
  return roots;
}

function matches(n) {
  if (filter.since > 0 && n.created < Date.now() - filter.since * 1000) return false;
  const t = filter.text.trim().toLowerCase();
  if (!t) return true;
  const tag = (n.image && n.image.tag) || '';
  if (tag.toLowerCase().includes(t)) return true;
  if (n.image && n.image.uuid.startsWith(t)) return true;
  if (n.opId && n.opId.startsWith(t)) return true;
  return commandOf(n.opId).toLowerCase().includes(t);
}

/** Keeps matching nodes and their ancestors; marks the ancestors dim. */
function applyFilter(roots) {
  const active = filter.text.trim() !== '' || filter.since > 0;
  const keep = (n) => {
    n.match = matches(n);
    n.children = n.children.filter(keep);
    n.dim = active && !n.match;
    n.hit = active && n.match;
    return n.match || n.children.length > 0;
  };
  return roots.filter(keep);
}

function layout(roots) {
  nodes = new Map();
  order = [];
  let row = 0;
  const place = (n, depth) => {
    n.depth = depth;
    nodes.set(n.id, n);
    order.push(n.id);
    n.x = depth * (W + GX);
    if (!n.children.length) {
      n.y = row * (H + GY);
      row++;
    } else {
      for (const c of n.children) place(c, depth + 1);
      n.y = (n.children[0].y + n.children[n.children.length - 1].y) / 2;
    }
  };
  for (const r of roots) {
    place(r, 0);
    row += 0.4; // a little air between separate trees
  }
}

// Drawing.

function truncate(str, n) {
  return str.length > n ? str.slice(0, n - 1) + '…' : str;
}

function describe(n) {
  const op = n.opId ? data.ops.get(n.opId) : null;
  const code = exitCodeOf(n.opId);
  const cmd = commandOf(n.opId);
  const tag = n.image && n.image.tag;
  const dur = op && (isTerminal(op.status) ? op.duration : (Date.now() - parseTime(op.created_at)) / 1000);
  return { op, code, cmd, tag, dur };
}

function drawNode(n) {
  const { op, code, cmd, tag, dur } = describe(n);
  const cls = statusClass(op, code);
  const label = statusLabel(op, code);
  const idText = n.kind === 'image' ? shortId(n.image.uuid) : 'op ' + shortId(n.opId);
  const title = [
    tag ? `tag ${tag}` : null,
    n.kind === 'image' ? `image ${n.image.uuid}` : `operation ${n.opId} (running)`,
    cmd ? `command: ${cmd}` : null,
    `status: ${label}`,
    dur !== undefined && dur !== null && op ? `duration: ${duration(dur)}` : null,
    n.kind === 'image' ? `created ${when(n.image.created_at)}` : null,
  ].filter(Boolean).join('\n');
  const aria = [
    tag || (n.kind === 'image' ? 'untagged image ' + shortId(n.image.uuid) : 'running operation ' + shortId(n.opId)),
    cmd ? 'command ' + cmd : null,
    label,
    op && dur !== undefined ? duration(dur) : null,
  ].filter(Boolean).join(', ');

  const g = s('g', {
    class: ['node', 's-' + cls, n.kind === 'op' ? 'ghost' : '', n.dim ? 'dim' : '', n.hit ? 'match' : '',
      n.id === selectedId ? 'selected' : ''].filter(Boolean).join(' '),
    'data-id': n.id, 'data-kind': n.kind, 'data-tag': tag || null,
    transform: `translate(${n.x},${n.y})`, tabindex: 0, role: 'treeitem',
    'aria-level': n.depth + 1, 'aria-selected': n.id === selectedId ? 'true' : 'false', 'aria-label': aria,
  });
  g.append(s('title', { text: title }));
  g.append(s('rect', { class: 'box', width: W, height: H, rx: 8 }));
  g.append(s('rect', { class: 'stripe', width: 6, height: H - 2, x: 1, y: 1, rx: 3 }));
  g.append(s('rect', { class: 'ring', width: W + 8, height: H + 8, x: -4, y: -4, rx: 11 }));
  let x = 14;
  if (tag) {
    const t = truncate(tag, 22);
    const tw = Math.min(170, t.length * 7.1 + 14);
    g.append(s('rect', { class: 'tagchip', x, y: 7, width: tw, height: 19, rx: 9.5 }));
    g.append(s('text', { class: 'tagtext', x: x + 7, y: 21, text: t }));
    x += tw + 8;
  }
  g.append(s('text', { class: 'idtext', x, y: 21, text: idText }));
  let line2;
  if (op && op.kind === 'image_import') line2 = cmd || 'imported image';
  else if (n.opId) line2 = cmd ? '$ ' + cmd : '…';
  else line2 = 'imported image';
  g.append(s('text', { class: 'cmd', x: 14, y: 42, text: truncate(line2, 32) }));
  const meta = [label];
  if (op && dur !== undefined && dur !== null) meta.push(duration(dur));
  if (n.kind === 'image') meta.push(when(n.image.created_at));
  g.append(s('text', { class: 'meta', x: 14, y: 61, text: meta.join(' · ') }));
  return g;
}

function drawEdge(p, c) {
  const x1 = p.x + W;
  const y1 = p.y + H / 2;
  const x2 = c.x;
  const y2 = c.y + H / 2;
  const mx = (x1 + x2) / 2;
  const cls = ['edge', c.kind === 'op' ? 'ghost' : '', c.dim ? 'dim' : ''].filter(Boolean).join(' ');
  return s('path', { class: cls, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` });
}

function signature() {
  const parts = [filter.text, filter.since, selectedId];
  for (const im of data.images.values()) {
    const opId = producerOf(im);
    parts.push(im.uuid, im.tag || '', im.parent_uuid || '', commandOf(opId), exitCodeOf(opId));
    const op = opId && data.ops.get(opId);
    if (op) parts.push(op.status, op.duration);
  }
  for (const op of data.ops.values()) {
    if (!isTerminal(op.status)) parts.push(op.uuid, op.status, commandOf(op.uuid), Math.floor(Date.now() / 1000));
  }
  return parts.join('|');
}

/** Redraws the tree if anything it shows changed. */
export function render(force) {
  if (!svg) return;
  const sig = signature();
  if (!force && sig === lastSig) return;
  lastSig = sig;
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest('#tree .node');
  const focusId = focused ? focused.dataset.id : null;

  const roots = applyFilter(buildForest());
  layout(roots);
  const edges = s('g', { class: 'edges', 'aria-hidden': 'true' });
  const group = s('g', { class: 'nodes' });
  for (const id of order) {
    const n = nodes.get(id);
    if (n.parent && nodes.has(n.parent.id)) edges.append(drawEdge(n.parent, n));
    group.append(drawNode(n));
  }
  vp.replaceChildren(edges, group);

  const images = [...nodes.values()].filter((n) => n.kind === 'image').length;
  const running = [...nodes.values()].filter((n) => n.kind === 'op').length;
  $('tree-count').textContent = `${images} image${images === 1 ? '' : 's'}` + (running ? ` · ${running} running` : '');
  const empty = $('tree-empty');
  if (!nodes.size) {
    empty.textContent = data.images.size ? 'No image matches the filter.' : 'No images yet: import one or run a command.';
  }
  empty.hidden = nodes.size > 0;

  // Fetch the commands and exit codes the nodes show.
  prefetch([...nodes.values()].map((n) => n.opId));

  if (!userMoved) autoFit();
  else apply();
  if (focusId && nodes.has(focusId)) focusNode(focusId);
}

// Zoom and pan.

function apply() {
  vp.setAttribute('transform', `translate(${view.x},${view.y}) scale(${view.k})`);
}

function bounds() {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (const n of nodes.values()) {
    x0 = Math.min(x0, n.x);
    y0 = Math.min(y0, n.y);
    x1 = Math.max(x1, n.x + W);
    y1 = Math.max(y1, n.y + H);
  }
  return { x0, y0, x1, y1 };
}

/**
 * Fits the whole tree in view, at most at natural size and at least at
 * minK; what does not fit then is panned so the selected node shows.
 */
export function fit(minK = MIN_K) {
  if (!nodes.size) return;
  const r = svg.getBoundingClientRect();
  if (!r.width || !r.height) return;
  const b = bounds();
  const pad = 28;
  const top = 56; // below the zoom buttons
  view.k = Math.max(minK, Math.min(1, (r.width - 2 * pad) / (b.x1 - b.x0), (r.height - top - pad) / (b.y1 - b.y0)));
  view.x = pad - b.x0 * view.k;
  view.y = Math.max(top, (r.height - (b.y1 - b.y0) * view.k) / 2) - b.y0 * view.k;
  apply();
  // Keep the node in use in view: the focused one, else the selected one.
  const f = document.activeElement && document.activeElement.closest && document.activeElement.closest('#tree .node');
  const keep = (f && nodes.get(f.dataset.id)) || nodes.get(selectedId);
  if (keep) ensureVisible(keep);
}

// autoFit fits the tree without the user asking: never so small that the
// text cannot be read.
function autoFit() { fit(AUTO_MIN_K); }

function zoomAt(k, cx, cy) {
  k = Math.max(MIN_K, Math.min(MAX_K, k));
  view.x = cx - ((cx - view.x) * k) / view.k;
  view.y = cy - ((cy - view.y) * k) / view.k;
  view.k = k;
  apply();
}

function zoomBy(f) {
  userMoved = true;
  const r = svg.getBoundingClientRect();
  zoomAt(view.k * f, r.width / 2, r.height / 2);
}

function onWheel(e) {
  e.preventDefault();
  userMoved = true;
  const r = svg.getBoundingClientRect();
  const d = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
  zoomAt(view.k * Math.exp(-d * 0.0015), e.clientX - r.left, e.clientY - r.top);
}

function onPointerDown(e) {
  if (e.button !== 0) return;
  const sx = e.clientX;
  const sy = e.clientY;
  const vx = view.x;
  const vy = view.y;
  let moving = false;
  panned = false;
  const move = (ev) => {
    const dx = ev.clientX - sx;
    const dy = ev.clientY - sy;
    if (!moving && Math.hypot(dx, dy) < 4) return;
    if (!moving) {
      moving = true;
      svg.setPointerCapture(e.pointerId);
      svg.classList.add('panning');
    }
    view.x = vx + dx;
    view.y = vy + dy;
    apply();
  };
  const up = () => {
    svg.removeEventListener('pointermove', move);
    svg.removeEventListener('pointerup', up);
    svg.removeEventListener('pointercancel', up);
    svg.classList.remove('panning');
    if (moving) {
      panned = true;
      userMoved = true;
    }
  };
  svg.addEventListener('pointermove', move);
  svg.addEventListener('pointerup', up);
  svg.addEventListener('pointercancel', up);
}

function onClick(e) {
  if (panned) {
    panned = false;
    return;
  }
  const g = e.target.closest('.node');
  if (g) open(g.dataset.id);
}

function open(id) {
  const n = nodes.get(id);
  if (!n) return;
  onOpen(n.kind === 'image' ? { image: n.image.uuid, op: n.opId } : { op: n.opId });
}

/** Pans the least needed to show node n whole. */
function ensureVisible(n) {
  if (!n) return;
  const r = svg.getBoundingClientRect();
  const m = 16;
  const x0 = view.x + n.x * view.k;
  const y0 = view.y + n.y * view.k;
  const x1 = x0 + W * view.k;
  const y1 = y0 + H * view.k;
  if (x0 >= m && y0 >= m && x1 <= r.width - m && y1 <= r.height - m) return;
  if (x0 < m) view.x += m - x0;
  else if (x1 > r.width - m) view.x -= Math.min(x1 - (r.width - m), x0 - m);
  if (y0 < m) view.y += m - y0;
  else if (y1 > r.height - m) view.y -= Math.min(y1 - (r.height - m), y0 - m);
  apply();
}

function neighbour(n, key) {
  switch (key) {
    case 'ArrowLeft':
      return n.parent && nodes.has(n.parent.id) ? n.parent : null;
    case 'ArrowRight':
      return n.children[0] || null;
    case 'ArrowUp':
    case 'ArrowDown': {
      // The nearest node above or below in the same column.
      const dir = key === 'ArrowUp' ? -1 : 1;
      let best = null;
      for (const o of nodes.values()) {
        if (o.depth !== n.depth || o === n || Math.sign(o.y - n.y) !== dir) continue;
        if (!best || Math.abs(o.y - n.y) < Math.abs(best.y - n.y)) best = o;
      }
      return best;
    }
    case 'Home':
      return nodes.get(order[0]);
    case 'End':
      return nodes.get(order[order.length - 1]);
  }
  return null;
}

function onKey(e) {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  switch (e.key) {
    case '+':
    case '=':
      zoomBy(1.25);
      e.preventDefault();
      return;
    case '-':
      zoomBy(0.8);
      e.preventDefault();
      return;
    case '0':
      userMoved = false;
      fit();
      e.preventDefault();
      return;
  }
  const g = e.target.closest && e.target.closest('.node');
  if (!g) return;
  const n = nodes.get(g.dataset.id);
  if (e.key === 'Enter' || e.key === ' ') {
    e.preventDefault();
    open(n.id);
    return;
  }
  const next = neighbour(n, e.key);
  if (next !== null || e.key.startsWith('Arrow')) e.preventDefault();
  if (next) focusNode(next.id);
}
