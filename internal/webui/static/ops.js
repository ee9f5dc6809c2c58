// The operations list: newest first, refreshed with every poll (2 s), with
// a cancel button on each operation still in flight.

import { data, commandOf, exitCodeOf, prefetch } from './data.js';
import { h, $, shortId, duration, when, isTerminal, badge, parseTime } from './util.js';

let onOpen = () => {};
let onCancel = () => {};
let selectedOp = null;
let lastSig = '';

export function init(opts) {
  onOpen = opts.onOpen;
  onCancel = opts.onCancel;
  $('ops-status').addEventListener('change', () => render(true));
  $('ops-body').addEventListener('click', (e) => {
    if (e.target.closest('button')) return;
    const tr = e.target.closest('tr[data-op]');
    if (tr) openRow(tr.dataset.op);
  });
  $('ops-body').addEventListener('keydown', (e) => {
    const tr = e.target.closest && e.target.closest('tr[data-op]');
    if (!tr || e.target !== tr) return;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      openRow(tr.dataset.op);
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const next = e.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
      if (next) next.focus();
    }
  });
}

function openRow(id) {
  const op = data.ops.get(id);
  if (!op) return;
  const img = op.result_image_uuid && data.images.has(op.result_image_uuid) ? op.result_image_uuid : null;
  onOpen(img ? { image: img, op: id } : { op: id });
}

export function select(opId) {
  selectedOp = opId;
  for (const tr of $('ops-body').querySelectorAll('tr[data-op]')) {
    tr.classList.toggle('selected', tr.dataset.op === opId);
  }
}

function imageRef(id) {
  if (!id) return '—';
  const im = data.images.get(id);
  return h('span', { class: 'mono', title: id }, im && im.tag ? `${im.tag} (${shortId(id)})` : shortId(id));
}

/** Redraws the table if anything it shows changed. */
export function render(force) {
  const want = $('ops-status').value.split(',').filter(Boolean);
  const ids = data.opOrder.filter((id) => !want.length || want.includes(data.ops.get(id).status));
  prefetch(ids.slice(0, 200));
  const sig = [want.join(), selectedOp, ...ids.map((id) => {
    const o = data.ops.get(id);
    const im = o.result_image_uuid && data.images.get(o.result_image_uuid);
    const src = o.image_uuid && data.images.get(o.image_uuid);
    return [id, o.status, o.duration, commandOf(id), exitCodeOf(id), im && im.tag, src && src.tag,
      isTerminal(o.status) ? '' : Math.floor(Date.now() / 1000)].join(':');
  })].join('|');
  if (data.updatedAt) $('ops-updated').textContent = 'updated ' + when(data.updatedAt);
  if (!force && sig === lastSig) return;
  lastSig = sig;

  const focusedOp = document.activeElement && document.activeElement.closest && document.activeElement.closest('#ops-body tr');
  const focusId = focusedOp ? focusedOp.dataset.op : null;
  const focusCancel = focusedOp && document.activeElement.tagName === 'BUTTON';
  const rows = ids.map((id) => {
    const o = data.ops.get(id);
    const code = exitCodeOf(id);
    const dur = isTerminal(o.status) ? o.duration : (Date.now() - parseTime(o.created_at)) / 1000;
    const cmd = commandOf(id);
    return h('tr', {
      'data-op': id, 'data-status': o.status, tabindex: 0, class: id === selectedOp ? 'selected' : null,
      'aria-label': `operation ${shortId(id)}, ${o.status.toLowerCase()}${cmd ? ', ' + cmd : ''}`,
    },
    h('td', {}, badge(o, code)),
    h('td', { class: 'mono' }, shortId(id)),
    h('td', { class: 'cmd', title: cmd }, cmd || (o.kind === 'image_import' ? 'import' : '…')),
    h('td', {}, when(o.created_at)),
    h('td', {}, duration(dur)),
    h('td', {}, imageRef(o.image_uuid)),
    h('td', {}, imageRef(o.result_image_uuid)),
    h('td', {}, isTerminal(o.status) ? null : h('button', {
      type: 'button', class: 'danger', 'aria-label': 'Cancel operation ' + shortId(id),
      onclick: () => onCancel(id),
    }, 'Cancel')));
  });
  $('ops-body').replaceChildren(...rows);
  $('ops-empty').hidden = rows.length > 0;
  if (focusId) {
    const tr = $('ops-body').querySelector(`tr[data-op="${CSS.escape(focusId)}"]`);
    if (tr) (focusCancel && tr.querySelector('button') ? tr.querySelector('button') : tr).focus({ preventScroll: true });
  }
}
