// Port previews: expose a TCP port of a running instance and link the
// signed URL the daemon proxies to it (POST /v1/operations/{id}/previews).

import { call } from './api.js';
import { h, toast } from './util.js';

// The links made per operation, and the port being typed: the panel's
// header is rebuilt on every refresh.
const links = new Map();
let typed = '';

function linkTo(p) {
  return h('a', { id: 'preview-link', href: p.path, target: '_blank', rel: 'noopener' }, `port ${p.port} ↗`);
}

/** The "Open a port" form of a running instance's panel. */
export function previewForm(op) {
  const input = h('input', {
    id: 'preview-port', type: 'number', min: '1', max: '65535', placeholder: 'port', autocomplete: 'off',
    'aria-describedby': 'preview-help', value: typed,
  });
  input.addEventListener('input', () => { typed = input.value; });
  const made = links.get(op.uuid);
  const out = h('span', { id: 'preview-out' }, made ? linkTo(made) : null);
  const form = h('form', { class: 'tagform', id: 'preview-form' },
    h('label', { for: 'preview-port' }, 'Port'), input,
    h('button', { type: 'submit', id: 'preview-open' }, 'Open preview'),
    out,
    h('span', { id: 'preview-help', class: 'muted' }, 'A signed link to a server listening in the sandbox, valid for an hour.'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const port = Number(input.value);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      toast('Type a port from 1 to 65535', true);
      return;
    }
    try {
      // The path, not the URL: this page's origin is the daemon's as the
      // browser reaches it.
      const p = await call(`/v1/operations/${op.uuid}/previews`, { method: 'POST', body: { port } });
      links.set(op.uuid, p);
      out.replaceChildren(linkTo(p));
    } catch (err) {
      toast('Not exposed: ' + err.message, true);
    }
  });
  return form;
}
