// Small DOM and formatting helpers.

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * Creates an HTML element: attrs sets attributes (on*: listeners; a false
 * or null value is skipped), children are nodes or strings.
 */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Creates an SVG element, as h does. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function $(id) { return document.getElementById(id); }

export function shortId(id) { return id ? String(id).slice(0, 8) : ''; }

export function isTerminal(status) {
  return status === 'SUCCESS' || status === 'FAILED' || status === 'CANCELLED';
}

/** Formats seconds as "850 ms", "3.2 s", "4 m 05 s", "2 h 03 m". */
export function duration(sec) {
  if (sec === null || sec === undefined || Number.isNaN(sec)) return '';
  if (sec < 1) return `${Math.round(sec * 1000)} ms`;
  if (sec < 60) return `${sec.toFixed(sec < 10 ? 2 : 1)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} m ${String(Math.round(sec % 60)).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} m`;
}

/** Formats a byte count as "512 B", "1.5 KiB", "3.0 MiB". */
export function bytes(n) {
  if (n === null || n === undefined) return '';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function parseTime(t) {
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? 0 : ms;
}

/** Formats a timestamp as local time, with the date unless it is today. */
export function when(t) {
  const ms = typeof t === 'number' ? t : parseTime(t);
  if (!ms) return '';
  const d = new Date(ms);
  const now = new Date();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (d.toDateString() === now.toDateString()) return time;
  return d.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' }) + ' ' + time;
}

/**
 * Classifies an operation for colour and label: ok, warn (exited non-zero),
 * bad (failed), run (in flight), gone (cancelled), import.
 */
export function statusClass(op, exitCode) {
  if (!op) return 'import';
  switch (op.status) {
    case 'SUCCESS':
      if (op.kind === 'image_import') return 'import';
      return exitCode !== undefined && exitCode !== null && exitCode !== 0 ? 'warn' : 'ok';
    case 'FAILED': return 'bad';
    case 'CANCELLED': return 'gone';
    default: return 'run';
  }
}

export function statusLabel(op, exitCode) {
  if (!op) return 'imported';
  if (op.status === 'SUCCESS' && op.kind === 'image_import') return 'imported';
  if (op.status === 'SUCCESS' && exitCode !== undefined && exitCode !== null && exitCode !== 0) return `exit ${exitCode}`;
  if (op.status === 'EXECUTING') return 'running';
  return op.status.toLowerCase();
}

export function badge(op, exitCode) {
  return h('span', { class: 'badge b-' + statusClass(op, exitCode) }, statusLabel(op, exitCode));
}

let toastTimer = 0;

/** Shows a short message at the bottom of the page. */
export function toast(msg, bad) {
  const t = $('toast');
  t.textContent = msg;
  t.classList.toggle('bad', !!bad);
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('show'), bad ? 6000 : 2500);
}

/** Reports whether bytes look like text (no NUL, valid UTF-8). */
export function decodeText(buf) {
  const b = new Uint8Array(buf);
  if (b.subarray(0, 8192).includes(0)) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch (_) {
    return null;
  }
}

/** Saves a Blob as a file through a temporary link. */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name || 'download' });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
