// Jobs this page started: submitting, following their progress (events, or polling), the preview and the queue.
import {api, imageUrl} from './api.js';
import {$, clearError, setStatus, showError} from './dom.js';
import {addGroup, fillGroup, markGroup} from './gallery.js';
import {buildRequest} from './form.js';
import {loadHistory} from './history.js';
import {FINAL, state} from './state.js';

export async function generate() {
  clearError();
  let req;
  try {
    req = await buildRequest();
  } catch (e) {
    showError(e.message);
    return;
  }
  await submit(req);
}

export async function submit(req) {
  const button = $('#generate');
  button.disabled = true;
  try {
    const res = await api('/api/jobs', {method: 'POST', json: req});
    const job = {id: res.id, req, state: res.state || 'queued', images: [], started: performance.now()};
    state.jobs.set(job.id, job);
    job.group = addGroup(job);
    showJob(job);
    setStatus(res.position ? `Queued · position ${res.position}` : 'Queued');
    follow(job);
    return job;
  } catch (e) {
    showError(e.message);
    return null;
  } finally {
    button.disabled = false;
    updateQueue();
  }
}

function showJob(job) {
  state.shown = job;
  const bar = $('#progress');
  bar.max = 1;
  bar.value = 0;
  $('#eta').textContent = '';
}

function follow(job) {
  if (!window.EventSource) { poll(job); return; }
  const es = new EventSource(`/api/jobs/${encodeURIComponent(job.id)}/events`);
  job.es = es;
  const data = (ev) => { try { return JSON.parse(ev.data); } catch (e) { return {}; } };
  es.addEventListener('queued', (ev) => {
    const pos = data(ev).position;
    if (state.shown === job && job.state === 'queued' && pos) setStatus(`Queued · position ${pos}`);
  });
  es.addEventListener('progress', (ev) => onProgress(job, data(ev)));
  es.addEventListener('done', (ev) => finish(job, 'done', data(ev)));
  es.addEventListener('failed', (ev) => finish(job, 'failed', data(ev)));
  es.addEventListener('cancelled', (ev) => finish(job, 'cancelled', data(ev)));
  es.onerror = () => {
    if (FINAL.has(job.state)) return;
    es.close();          // the stream broke (a restart, a proxy): ask for the job's state instead
    setTimeout(() => poll(job), 500);
  };
}

async function poll(job) {
  while (!FINAL.has(job.state)) {
    let j;
    try {
      j = await api(`/api/jobs/${encodeURIComponent(job.id)}`);
    } catch (e) {
      if (e.status === 404) { finish(job, 'failed', {error: 'the server no longer knows this job'}); return; }
      await new Promise((r) => setTimeout(r, 2000));
      continue;
    }
    if (FINAL.has(j.state)) { finish(job, j.state, {images: j.images, error: j.error}); return; }
    if (j.state === 'running' && j.progress) onProgress(job, j.progress);
    await new Promise((r) => setTimeout(r, 700));
  }
}

function onProgress(job, d) {
  if (FINAL.has(job.state)) return;
  job.state = 'running';
  if (state.shown !== job && (!state.shown || FINAL.has(state.shown.state))) showJob(job);
  if (state.shown !== job) return;
  const bar = $('#progress');
  const steps = Math.max(1, Number(d.steps) || 1);
  bar.max = steps;
  bar.value = Math.min(steps, Number(d.step) || 0);
  const eta = d.eta_s === null || d.eta_s === undefined ? NaN : Number(d.eta_s);
  $('#eta').textContent = `${d.step}/${steps}` + (Number.isFinite(eta) && d.step < steps ? ` · ${Math.ceil(eta)} s` : '');
  setStatus(`Painting · step ${d.step} of ${steps}`);
  if (d.preview) showPreview(d.preview);
}

export function showPreview(src) {
  const img = $('#preview');
  img.onload = () => img.classList.toggle('small', img.naturalWidth <= 128);
  img.src = src;
  img.hidden = false;
  $('#preview-empty').hidden = true;
}

async function finish(job, st, d) {
  if (FINAL.has(job.state)) return;
  job.state = st;
  if (job.es) job.es.close();
  const seconds = ((performance.now() - job.started) / 1000).toFixed(1);
  if (st === 'done') {
    let ids = (d && d.images) || [];
    if (!ids.length) {
      try { ids = (await api(`/api/jobs/${encodeURIComponent(job.id)}`)).images || []; } catch (e) { /* shown below */ }
    }
    job.images = ids.map((x) => (x && typeof x === 'object' ? x.id : x));
    fillGroup(job);
    if (state.shown === job || !state.shown || FINAL.has(state.shown.state)) {
      const bar = $('#progress');
      bar.value = bar.max;
      $('#eta').textContent = `${seconds} s`;
      if (job.images.length) showPreview(imageUrl(job.images[0]));
      setStatus(`Done in ${seconds} s · ${job.images.length} picture${job.images.length === 1 ? '' : 's'}`);
    }
    loadHistory(0);
  } else if (st === 'failed') {
    const msg = (d && d.error) || 'unknown error';
    showError(`The painting failed: ${msg}`);
    setStatus('Failed');
    markGroup(job, `failed: ${msg}`);
  } else {
    setStatus('Cancelled');
    markGroup(job, 'cancelled');
    if (state.shown === job) { $('#progress').value = 0; $('#eta').textContent = ''; }
  }
  const next = [...state.jobs.values()].find((j) => !FINAL.has(j.state));
  if (next && state.shown === job) showJob(next);
  updateQueue();
}

export async function cancelAll() {
  const active = [...state.jobs.values()].filter((j) => !FINAL.has(j.state));
  for (const job of active) {
    try {
      await api(`/api/jobs/${encodeURIComponent(job.id)}/cancel`, {method: 'POST'});
    } catch (e) {
      if (e.status !== 409) showError(`Cannot cancel: ${e.message}`);
    }
  }
  setStatus(active.length ? 'Cancelling…' : '');
}

function updateQueue() {
  const active = [...state.jobs.values()].filter((j) => !FINAL.has(j.state)).length;
  $('#cancel').disabled = active === 0;
  $('#queue-state').textContent = active > 1 ? `${active} jobs in the queue` : active === 1 ? '1 job in the queue' : '';
}
