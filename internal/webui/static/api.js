// The daemon's REST API (/v1, same origin) with the user's bearer token.

const TOKEN_KEY = 'arbor.token';

/** An HTTP error answered by the API, with its status and message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
  }
}

let unauthorized = () => {};

/** Sets what happens when the token is refused (401). */
export function onUnauthorized(fn) { unauthorized = fn; }

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
export function setToken(t) { sessionStorage.setItem(TOKEN_KEY, t); }
export function clearToken() { sessionStorage.removeItem(TOKEN_KEY); }

function headers(extra) {
  return Object.assign({ Authorization: 'Bearer ' + token() }, extra || {});
}

async function fail(resp) {
  let msg = '';
  try {
    const body = await resp.json();
    msg = body && body.error;
  } catch (_) { /* not JSON */ }
  if (resp.status === 401) unauthorized(msg);
  return new ApiError(resp.status, msg || `${resp.status} ${resp.statusText}`);
}

/**
 * Calls the API: path is absolute ("/v1/images"), opts.query an object of
 * query parameters, opts.body a value sent as JSON. Answers the decoded JSON
 * body, or null for an empty one.
 */
export async function call(path, opts = {}) {
  const { method = 'GET', query, body, signal } = opts;
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
    const s = q.toString();
    if (s) url += '?' + s;
  }
  const init = { method, headers: headers(), signal, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url, init);
  if (!resp.ok) throw await fail(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** Fetches a file of an image as a Blob. */
export async function download(imageId, path, signal) {
  const url = `/v1/inspect/${encodeURIComponent(imageId)}/download?path=${encodeURIComponent(path)}`;
  const resp = await fetch(url, { headers: headers(), signal, cache: 'no-store' });
  if (!resp.ok) throw await fail(resp);
  return resp.blob();
}

/**
 * Follows an operation's event log (SSE over fetch, since EventSource
 * cannot send the Authorization header), calling onEvent with each parsed
 * event ({id, ts, spid, type, data}). Resolves when the stream ends (after
 * the completion event) or signal aborts.
 */
export async function followEvents(opId, onEvent, signal) {
  const url = `/v1/operations/${encodeURIComponent(opId)}/events?follow=1`;
  const resp = await fetch(url, { headers: headers({ Accept: 'text/event-stream' }), signal, cache: 'no-store' });
  if (!resp.ok) throw await fail(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let frame = { event: '', data: [] };
  const dispatch = () => {
    if (frame.data.length) {
      const raw = frame.data.join('\n');
      let ev;
      try { ev = JSON.parse(raw); } catch (_) { ev = { type: frame.event || 'message', data: raw }; }
      if (frame.event && !ev.type) ev.type = frame.event;
      onEvent(ev, frame.event);
    }
    frame = { event: '', data: [] };
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\n|\r/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') { dispatch(); continue; }
        if (line[0] === ':') continue; // a comment: keepalive
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let v = i < 0 ? '' : line.slice(i + 1);
        if (v[0] === ' ') v = v.slice(1);
        if (field === 'event') frame.event = v;
        else if (field === 'data') frame.data.push(v);
      }
    }
    dispatch();
  } finally {
    reader.releaseLock();
  }
}

/** Decodes a stream value ({value, encoding}) to text. */
export function streamText(s) {
  if (!s || !s.value) return '';
  if ((s.encoding || '').toLowerCase() === 'base64') {
    const bin = atob(s.value);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder('utf-8').decode(bytes);
  }
  return s.value;
}
