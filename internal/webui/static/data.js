// The account's images and operations, refreshed by polling, with the
// details of operations (command, result) fetched on demand and cached.

import { call } from './api.js';
import { isTerminal } from './util.js';

export const POLL_MS = 2000;
const IMAGE_LIMIT = 1000;
const OP_LIMIT = 500;
const DETAIL_CONCURRENCY = 4;

export const data = {
  images: new Map(), // uuid -> image
  ops: new Map(), // uuid -> operation summary
  opOrder: [], // operation uuids, newest first
  details: new Map(), // uuid -> full operation (metadata) once fetched
  producers: new Map(), // image uuid -> uuid of the operation that made it
  loaded: false,
  updatedAt: 0,
};

const listeners = new Set();

/** Calls fn(what) after each change: what is 'images', 'ops' or 'details'. */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(what) {
  for (const fn of listeners) {
    try { fn(what); } catch (e) { console.warn('listener failed', e); }
  }
}

export async function loadImages() {
  const res = await call('/v1/images', { query: { limit: IMAGE_LIMIT } });
  const next = new Map();
  for (const im of (res && res.images) || []) next.set(im.uuid, im);
  data.images = next;
  emit('images');
}

export async function loadOps() {
  const list = (await call('/v1/operations', { query: { limit: OP_LIMIT } })) || [];
  const next = new Map();
  const producers = new Map();
  let imagesStale = false;
  for (const op of list) {
    next.set(op.uuid, op);
    if (op.result_image_uuid) producers.set(op.result_image_uuid, op.uuid);
    const prev = data.ops.get(op.uuid);
    if (prev && prev.status !== op.status) {
      const d = data.details.get(op.uuid);
      if (d && !isTerminal(d.status)) data.details.delete(op.uuid); // refetch for its result
    }
    if (op.result_image_uuid && !data.images.has(op.result_image_uuid)) imagesStale = true;
  }
  data.ops = next;
  data.producers = producers;
  data.opOrder = list.map((o) => o.uuid);
  data.updatedAt = Date.now();
  if (imagesStale) await loadImages();
  emit('ops');
}

export async function loadAll() {
  await loadImages();
  await loadOps();
  data.loaded = true;
}

// Details: one request per operation, a few at a time.
const pending = new Map(); // uuid -> promise
const queue = [];
let active = 0;

function pump() {
  while (active < DETAIL_CONCURRENCY && queue.length) {
    const { id, resolve, reject } = queue.shift();
    active++;
    call('/v1/operations/' + encodeURIComponent(id))
      .then((d) => {
        data.details.set(id, d);
        resolve(d);
        emit('details');
      }, reject)
      .finally(() => {
        active--;
        pending.delete(id);
        pump();
      });
  }
}

/** Answers the full operation id, fetched once (again while it runs if fresh). */
export function detail(id, fresh) {
  const have = data.details.get(id);
  if (have && !fresh && (isTerminal(have.status) || !data.ops.has(id) || data.ops.get(id).status === have.status)) {
    return Promise.resolve(have);
  }
  if (pending.has(id)) return pending.get(id);
  const p = new Promise((resolve, reject) => {
    if (fresh) {
      queue.unshift({ id, resolve, reject });
    } else {
      queue.push({ id, resolve, reject });
    }
  });
  pending.set(id, p);
  pump();
  return p;
}

/** Fetches missing details in the background; errors are logged, not thrown. */
export function prefetch(ids) {
  for (const id of ids) {
    if (!id || data.details.has(id) || pending.has(id)) continue;
    detail(id).catch((e) => console.warn('operation details', id, e.message));
  }
}

/**
 * The uuid of the operation that produced image im, or null. Imported
 * images do not name theirs: it is found by its result.
 */
export function producerOf(im) {
  return (im && (im.operation_uuid || data.producers.get(im.uuid))) || null;
}

/** The command line an operation ran, or '' while unknown. */
export function commandOf(opId) {
  const d = opId && data.details.get(opId);
  if (!d || !d.metadata) return '';
  const m = d.metadata;
  if (d.kind === 'image_import') return 'import ' + ((m.registry && m.registry.url) || '');
  let cmd = m.command || '';
  if (m.args && m.args.length) cmd += ' ' + m.args.join(' ');
  return cmd;
}

/** The exit code of an operation's main process, or undefined. */
export function exitCodeOf(opId) {
  const d = opId && data.details.get(opId);
  const st = d && d.metadata && d.metadata.result && d.metadata.result.state;
  if (!st || st.exit_code === undefined || st.exit_code < 0) return undefined;
  return st.exit_code;
}

let timer = 0;
let polling = false;

/** Starts polling operations (and images, when results appear) every 2 s. */
export function startPolling(onError) {
  stopPolling();
  polling = true;
  let n = 0;
  const tick = async () => {
    if (!polling) return;
    try {
      // Tags may change elsewhere too: reload images every fifth tick.
      if (++n % 5 === 0) await loadImages();
      await loadOps();
    } catch (e) {
      if (onError) onError(e);
    }
    if (polling) timer = setTimeout(tick, POLL_MS);
  };
  timer = setTimeout(tick, POLL_MS);
}

export function stopPolling() {
  polling = false;
  clearTimeout(timer);
}
