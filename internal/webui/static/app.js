// arbor web UI: sign-in, views (#/tree, #/operations) and the node panel.
// Routes: #/<view>[/image/<uuid>|/op/<uuid>].

import { call, token, setToken, clearToken, onUnauthorized } from './api.js';
import { loadAll, startPolling, stopPolling, subscribe } from './data.js';
import * as tree from './tree.js';
import * as ops from './ops.js';
import * as panel from './panel.js';
import { $, toast } from './util.js';

let view = 'tree';
let started = false;

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  const v = parts[0] === 'operations' ? 'operations' : 'tree';
  let target = null;
  if (parts[1] === 'image' && parts[2]) target = { image: parts[2] };
  else if (parts[1] === 'op' && parts[2]) target = { op: parts[2] };
  return { view: v, target };
}

function routeFor(v, target) {
  let r = '#/' + v;
  if (target && target.image) r += '/image/' + target.image;
  else if (target && target.op) r += '/op/' + target.op;
  return r;
}

function navigate(v, target) {
  const r = routeFor(v, target);
  if (location.hash !== r) location.hash = r;
  else applyRoute();
}

function applyRoute() {
  if (!started) return;
  const { view: v, target } = parseRoute();
  view = v;
  $('tree-view').hidden = v !== 'tree';
  $('ops-view').hidden = v !== 'operations';
  $('nav-tree').toggleAttribute('aria-current', false);
  $('nav-ops').toggleAttribute('aria-current', false);
  (v === 'tree' ? $('nav-tree') : $('nav-ops')).setAttribute('aria-current', 'page');
  document.title = (v === 'tree' ? 'Tree' : 'Operations') + ' · arbor';
  if (target) panel.open(target);
  else if (panel.current()) panel.close();
  syncSelection();
  if (v === 'tree') tree.render(true);
  else ops.render(true);
}

function syncSelection() {
  const t = panel.current();
  tree.select(t ? tree.nodeIdFor(t) : null);
  ops.select(t ? t.op : null);
}

function openTarget(target) {
  navigate(view, target);
}

async function signIn(secret) {
  setToken(secret);
  const who = await call('/v1/whoami');
  $('account').textContent = 'account ' + (who.account || 'default');
  return who;
}

function showLogin(msg) {
  stopPolling();
  started = false;
  $('login').hidden = false;
  $('tree-view').hidden = true;
  $('ops-view').hidden = true;
  $('views').hidden = true;
  $('who').hidden = true;
  if (panel.current()) panel.close();
  $('login-error').textContent = msg || '';
  $('token').value = '';
  $('token').focus();
}

async function start() {
  $('login').hidden = true;
  $('views').hidden = false;
  $('who').hidden = false;
  started = true;
  await loadAll();
  applyRoute();
  startPolling((e) => {
    if (e.status !== 401) toast('Refresh failed: ' + e.message, true);
  });
}

function boot() {
  tree.init({ onOpen: openTarget });
  ops.init({ onOpen: openTarget, onCancel: panel.cancel });
  panel.init({
    onClose: (was) => {
      const r = routeFor(view, null);
      if (location.hash !== r) history.replaceState(null, '', r);
      syncSelection();
      // Give focus back to the node the panel showed.
      if (was && view === 'tree') {
        const id = tree.nodeIdFor(was);
        if (id) tree.focusNode(id);
      }
    },
    onRetarget: (target, focus) => {
      navigate(view, target);
      if (focus && view === 'tree') {
        const id = tree.nodeIdFor(target);
        if (id) tree.focusNode(id);
      }
    },
  });
  subscribe(() => {
    if (!started) return;
    panel.refresh();
    syncSelection();
    if (view === 'tree') tree.render();
    else ops.render();
  });
  onUnauthorized(() => {
    clearToken();
    showLogin('The token was refused (expired or revoked?): enter another.');
  });
  window.addEventListener('hashchange', applyRoute);

  let filterTimer = 0;
  $('filter-text').addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => tree.setFilter({ text: $('filter-text').value }), 120);
  });
  $('filter-since').addEventListener('change', () => tree.setFilter({ since: Number($('filter-since').value) }));

  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const secret = $('token').value.trim();
    if (!secret) return;
    $('login-error').textContent = '';
    try {
      await signIn(secret);
      await start();
    } catch (err) {
      clearToken();
      if (err.status !== 401) $('login-error').textContent = 'Could not sign in: ' + err.message;
    }
  });
  $('signout').addEventListener('click', () => {
    clearToken();
    showLogin('Signed out.');
  });

  if (token()) {
    signIn(token()).then(start, (err) => {
      if (err.status !== 401) showLogin('Could not reach the API: ' + err.message);
    });
  } else {
    showLogin('');
  }
}

boot();
