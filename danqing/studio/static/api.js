// The REST API of docs/studio.md: requests, and its errors as readable messages.
import {state} from './state.js';

// The server writes a token into the page; sent with every request, it shows the request comes from this page
// and not from some other site's (which the server refuses for anything that changes state).
const pageToken = document.querySelector('meta[name="danqing-token"]')?.content || '';

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function detailText(data) {
  if (data === null || data === undefined) return '';
  if (typeof data === 'string') return data.trim().slice(0, 400);
  const d = data.detail ?? data.error ?? data.message;
  if (typeof d === 'string') return d;
  if (Array.isArray(d)) {
    return d.map((e) => {
      const loc = (e.loc || []).filter((x) => x !== 'body').join('.');
      const msg = String(e.msg || JSON.stringify(e)).replace(/^Value error, /, '');
      return (loc ? `${loc}: ` : '') + msg;
    }).join('\n');
  }
  return d ? JSON.stringify(d) : '';
}

// A studio started with --token answers 401 until this browser has it: ask once, then let the server take it
// from the address (it keeps it in an HttpOnly cookie, which pictures and event streams need too).
let askedForToken = false;
function askForToken() {
  if (askedForToken) return;
  askedForToken = true;
  const refused = location.hash === '#token-refused';
  const token = window.prompt(refused ? 'That token was refused. The studio\'s token (danqing studio --token):'
    : 'This studio needs its token (the one given to danqing studio --token):');
  if (token && token.trim()) location.replace(`/?token=${encodeURIComponent(token.trim())}`);
}

// A request to the studio: the answer when it is ok, else an ApiError with the server's message.
async function send(path, {method = 'GET', json, form, accept = 'application/json'} = {}) {
  const opts = {method, headers: {Accept: accept}};
  if (pageToken) opts.headers['X-Danqing-Token'] = pageToken;
  if (json !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(json);
  } else if (form) {
    opts.body = form;
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError('Cannot reach the studio server: is `danqing studio` still running?', 0);
  }
  if (res.ok) return res;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  const detail = detailText(data);
  if (res.status === 401) askForToken();
  if (res.status === 429) {
    const after = res.headers.get('Retry-After');
    const msg = `Queue full, retry in ${after || 'a few'} s`;
    throw new ApiError(detail && !/queue/i.test(detail) ? `${msg} (${detail})` : msg, 429);
  }
  throw new ApiError(detail || `${res.status} ${res.statusText}`, res.status);
}

export async function api(path, opts = {}) {
  const text = await (await send(path, opts)).text();
  try { return text ? JSON.parse(text) : null; } catch (e) { return text; }
}

// A request answered with a picture (the sketch pad's): the picture as a Blob.
export async function apiBlob(path, opts = {}) {
  return (await send(path, {...opts, accept: 'image/png'})).blob();
}

export const imageUrl = (id) => `/api/images/${encodeURIComponent(id)}`;

export async function paramsOf(id) {
  if (!state.params.has(id)) {
    const data = await api(`${imageUrl(id)}/params`);
    state.params.set(id, data && data.params && typeof data.params === 'object' ? data.params : data);
  }
  return state.params.get(id);
}
