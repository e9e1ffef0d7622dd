// danqing studio: the page. Plain JavaScript, no build step; talks to the REST API described in docs/studio.md.
'use strict';

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  };

  const SVG = 'http://www.w3.org/2000/svg';
  const icon = (name) => {
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'i');
    svg.setAttribute('aria-hidden', 'true');
    const use = document.createElementNS(SVG, 'use');
    use.setAttribute('href', `#i-${name}`);
    svg.append(use);
    return svg;
  };

  const FINAL = new Set(['done', 'failed', 'cancelled']);
  const GRID_PARAMS = ['prompt', 'seed', 'steps', 'guidance', 'sampler', 'strength'];
  const HISTORY_PAGE = 24;
  const MAX_STYLES = 4;
  const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0] % 2147483648;

  const state = {
    models: [],
    model: null,
    mode: 'txt2img',
    jobs: new Map(),           // id -> job this page started
    shown: null,               // the job whose progress the bar shows
    init: null,                // {id, width, height}: the uploaded init image
    content: null,             // style transfer: {id, upload, url}: an upload, or a picture of the history
    styles: [],                // style transfer: [{id, url, weight}]: uploads
    styleInfo: {methods: ['adain', 'gatys'], unavailable: {}},
    mask: {painted: false, upload: null, drawing: false, last: null},
    history: {offset: 0, total: 0, count: 0},
    params: new Map(),         // image id -> its parameters (cache)
    ratings: new Map(),        // image id -> the rating given here (newer than a history page still on its way)
  };

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
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

  async function api(path, {method = 'GET', json, form} = {}) {
    const opts = {method, headers: {Accept: 'application/json'}};
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
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
    if (!res.ok) {
      const detail = detailText(data);
      if (res.status === 429) {
        const after = res.headers.get('Retry-After');
        const msg = `Queue full, retry in ${after || 'a few'} s`;
        throw new ApiError(detail && !/queue/i.test(detail) ? `${msg} (${detail})` : msg, 429);
      }
      throw new ApiError(detail || `${res.status} ${res.statusText}`, res.status);
    }
    return data;
  }

  const imageUrl = (id) => `/api/images/${encodeURIComponent(id)}`;

  async function paramsOf(id) {
    if (!state.params.has(id)) {
      const data = await api(`${imageUrl(id)}/params`);
      state.params.set(id, data && data.params && typeof data.params === 'object' ? data.params : data);
    }
    return state.params.get(id);
  }

  // ------------------------------------------------------------------ messages

  function showError(message) {
    const box = $('#error');
    box.textContent = message;
    box.hidden = !message;
  }
  const clearError = () => showError('');

  let toastTimer = null;
  function toast(message) {
    const t = $('#toast');
    t.textContent = message;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 3500);
  }

  const setStatus = (text) => { $('#status').textContent = text; };

  // ------------------------------------------------------------------ models

  function supports(m, feature) {
    const s = m && m.supports;
    if (Array.isArray(s)) return s.includes(feature);
    if (s && typeof s === 'object' && feature in s) return Boolean(s[feature]);
    return feature !== 'best_of';
  }

  const hasSamplers = (m) => Boolean(m && m.samplers && m.samplers.length);

  function fillSelect(select, values, label = (v) => String(v)) {
    const keep = select.value;
    select.replaceChildren(...values.map((v) => el('option', {value: v, text: label(v)})));
    if (values.map(String).includes(keep)) select.value = keep;
  }

  async function loadModels() {
    let data;
    try {
      data = await api('/api/models');
    } catch (e) {
      showError(`Cannot list the models: ${e.message}`);
      return;
    }
    state.models = Array.isArray(data) ? data : (data && (data.models || data.items)) || [];
    if (data && data.style) applyStyleInfo(data.style);
    const select = $('#model');
    if (!state.models.length) {
      select.replaceChildren(el('option', {value: '', text: 'no models'}));
      showError('No models found: train one (`danqing train ...`) into the runs folder the studio watches. '
        + 'Style transfer needs none.');
      return;
    }
    select.replaceChildren(...state.models.map((m) => el('option', {value: m.name, text: m.name})));
    fillSelect($('#history-model'), ['', ...state.models.map((m) => m.name), 'style'],   // style: style transfer's
      (v) => v || 'all models');
    const saved = localStorage.getItem('danqing.model');
    select.value = state.models.some((m) => m.name === saved) ? saved : state.models[0].name;
    applyModel(false);
  }

  // Show the fields the chosen model takes; `keep` leaves the values of the form alone.
  function applyModel(keep) {
    const m = state.models.find((x) => x.name === $('#model').value) || null;
    state.model = m;
    if (!m) return;
    localStorage.setItem('danqing.model', m.name);
    const kind = m.kind || 'text';
    $('#prompt-field').hidden = kind !== 'text';
    $('#negative-field').hidden = kind !== 'text';
    $('#class-field').hidden = kind !== 'class';
    $('#uncond-note').hidden = kind !== 'unconditional';
    if (kind === 'class') {
      fillSelect($('#class'), ['', ...(m.class_names || [])], (v) => v === '' ? 'every class in turn' : v);
    }
    const sizes = (m.sizes && m.sizes.length) ? m.sizes : [m.image_size];
    fillSelect($('#size'), sizes, (s) => `${s} × ${s}`);
    const sampling = hasSamplers(m);
    $('#sampling-fields').hidden = !sampling;
    if (sampling) fillSelect($('#sampler'), m.samplers);
    $('#best-field').hidden = !supports(m, 'best_of');
    if (!supports(m, 'best_of')) $('#best-of').value = '1';
    if (!keep) {
      const d = m.defaults || {};
      if (d.steps) $('#steps').value = d.steps;
      if (d.guidance !== null && d.guidance !== undefined) $('#guidance').value = d.guidance;
      if (d.sampler && m.samplers.includes(d.sampler)) $('#sampler').value = d.sampler;
      $('#size').value = String(d.size || m.image_size || sizes[0]);
    }
    const modes = {image: supports(m, 'img2img') || supports(m, 'inpaint'),
      interpolation: supports(m, 'interpolation'), grid: supports(m, 'grid'), style: true};
    for (const [mode, ok] of Object.entries(modes)) {
      const tab = $(`#tab-${mode}`);
      tab.disabled = !ok;
      tab.title = ok ? '' : `${m.name} cannot do this`;
    }
    if (state.mode !== 'txt2img' && !modes[state.mode]) setMode('txt2img');
    const gridParams = GRID_PARAMS.filter((p) => {
      if (p === 'prompt') return kind !== 'unconditional';
      if (['steps', 'guidance', 'sampler'].includes(p)) return sampling;
      if (p === 'strength') return modes.image;
      return true;
    });
    for (const [sel, fallback] of [['#grid-x-param', 'seed'], ['#grid-y-param', sampling ? 'guidance' : 'seed']]) {
      const select = $(sel);
      const before = select.value;
      fillSelect(select, gridParams);
      select.value = gridParams.includes(before) ? before : fallback;
    }
    gridPlaceholders();
    $('#model-info').textContent = [m.family, kind, `${m.image_size} px`].filter(Boolean).join(' · ');
  }

  function gridPlaceholders() {
    const m = state.model;
    const examples = {seed: '1, 2, 3', steps: '10, 20, 40', guidance: '1, 3, 5', strength: '0.3, 0.6, 0.9',
      sampler: m && m.samplers ? m.samplers.slice(0, 3).join(', ') : '', prompt: 'a red apple | a green pear'};
    if (m && m.kind === 'class') examples.prompt = (m.class_names || []).slice(0, 3).join(', ');
    for (const a of ['x', 'y']) {
      const eg = examples[$(`#grid-${a}-param`).value] || '';
      $(`#grid-${a}-values`).placeholder = a === 'y' ? `optional, e.g. ${eg}` : `e.g. ${eg}`;
    }
  }

  function setMode(mode) {
    state.mode = mode;
    for (const tab of $$('.tabs [role="tab"]')) tab.setAttribute('aria-selected', String(tab.dataset.mode === mode));
    for (const panel of $$('.mode-panel')) panel.hidden = !panel.dataset.modes.split(' ').includes(mode);
    $('#n-field').hidden = mode === 'interpolation' || mode === 'grid';
    $('#form').dataset.mode = mode;            // style transfer hides the painting fields (.paint-only)
  }

  // ------------------------------------------------------------------ the seed

  function setLocked(locked) {
    const b = $('#seed-lock');
    b.setAttribute('aria-pressed', String(locked));
    b.replaceChildren(icon(locked ? 'lock' : 'unlock'));
    b.title = locked ? 'Locked: this seed is kept' : 'Unlocked: a new seed for every painting';
  }
  const seedLocked = () => $('#seed-lock').getAttribute('aria-pressed') === 'true';

  // The seed of the next painting: a new one unless the lock keeps the one shown.
  function nextSeed() {
    const v = $('#seed').value.trim();
    if (!seedLocked() || v === '' || !/^\d+$/.test(v)) $('#seed').value = randomSeed();
    return Number($('#seed').value);
  }

  // ------------------------------------------------------------------ building requests

  const num = (sel) => Number($(sel).value);

  function promptFields(m, req) {
    if (m.kind === 'text') {
      req.prompt = $('#prompt').value;
      req.negative_prompt = $('#negative').value;
    } else if (m.kind === 'class') {
      req.prompt = $('#class').value;
    } else {
      req.prompt = '';
    }
  }

  function samplingFields(m, req) {
    req.size = num('#size');
    if (hasSamplers(m)) {
      req.steps = num('#steps');
      req.guidance = num('#guidance');
      req.sampler = $('#sampler').value;
    }
    if (supports(m, 'best_of')) req.best_of = num('#best-of');
  }

  function gridValues(param, text) {
    const sep = param === 'prompt' && text.includes('|') ? '|' : ',';
    const parts = text.split(sep).map((s) => s.trim()).filter((s) => s !== '');
    if (!parts.length) throw new Error(`give the ${param} values, separated by commas`);
    if (['seed', 'steps'].includes(param)) return parts.map((s) => (/^-?\d+$/.test(s) ? Number(s) : s));
    if (['guidance', 'strength'].includes(param)) return parts.map((s) => (Number.isFinite(Number(s)) ? Number(s) : s));
    return parts;
  }

  async function buildRequest() {
    if (state.mode === 'style') return styleRequest();
    const m = state.model;
    if (!m) throw new Error('Choose a model first.');
    const req = {type: 'txt2img', model: m.name};
    promptFields(m, req);
    samplingFields(m, req);
    if (m.kind === 'text' && !req.prompt.trim()) throw new Error('Write a prompt first: describe the picture.');
    if (state.mode === 'txt2img') {
      req.n = num('#n');
      req.seed = nextSeed();
    } else if (state.mode === 'image') {
      if (!state.init) throw new Error('Choose or drop an init image first.');
      req.n = num('#n');
      req.seed = nextSeed();
      req.init_image = state.init.id;
      req.strength = num('#strength');
      req.type = 'img2img';
      if (state.mask.painted) {
        req.type = 'inpaint';
        req.mask = await uploadMask();
      }
    } else if (state.mode === 'interpolation') {
      req.type = 'interpolation';
      delete req.best_of;
      req.seed = nextSeed();
      if ($('#seed-b').value.trim() === '') $('#seed-b').value = randomSeed();
      req.seed_b = num('#seed-b');
      req.frames = num('#frames');
    } else if (state.mode === 'grid') {
      req.type = 'grid';
      delete req.best_of;
      req.seed = nextSeed();
      const axis = (a) => ({param: $(`#grid-${a}-param`).value,
        values: gridValues($(`#grid-${a}-param`).value, $(`#grid-${a}-values`).value)});
      req.x = axis('x');
      if ($('#grid-y-values').value.trim()) req.y = axis('y');        // no y values: one row
      if (state.init && [req.x.param, req.y && req.y.param].includes('strength')) {
        req.init_image = state.init.id;
        req.strength = num('#strength');
      }
    }
    return req;
  }

  function styleRequest() {
    if (!state.content) throw new Error('Choose a content picture first (or click one in the history).');
    if (!state.styles.length) throw new Error('Add a style picture first.');
    const req = {type: 'style', styles: state.styles.map((s) => s.id), method: $('#method').value,
      preserve_color: $('#preserve').value || null, size: num('#style-size')};
    req[state.content.upload ? 'init_image' : 'content_image'] = state.content.id;
    if (state.styles.length > 1) req.style_weights = state.styles.map((s) => Number(s.weight));
    if (req.method === 'adain') req.alpha = num('#alpha');
    else req.steps = num('#style-steps');
    return req;
  }

  function describe(req) {
    const seed = req.seed !== undefined && req.seed !== null ? `seed ${req.seed}` : '';
    const what = {
      txt2img: 'Paint', img2img: 'img2img', inpaint: 'Inpaint', variations: 'Variations',
      interpolation: 'Interpolation', grid: 'X/Y grid', style: 'Style transfer'}[req.type] || req.type;
    const bits = [];
    if (req.type === 'style') bits.push(req.method, `${req.styles.length} style${req.styles.length > 1 ? 's' : ''}`);
    else if (req.type === 'interpolation') bits.push(`seed ${req.seed} → ${req.seed_b}, ${req.frames} frames`);
    else if (req.type === 'grid') bits.push(req.y ? `${req.x.param} × ${req.y.param}` : req.x.param, seed);
    else if (req.type === 'variations') bits.push(`near seed ${req.seed}, strength ${req.variation_strength}`);
    else bits.push(seed);
    if (req.steps) bits.push(`${req.steps} steps`);
    return {what, prompt: req.prompt || '', detail: bits.filter(Boolean).join(' · ')};
  }

  // ------------------------------------------------------------------ jobs

  async function generate() {
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

  async function submit(req) {
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

  function showPreview(src) {
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

  async function cancelAll() {
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

  // ------------------------------------------------------------------ gallery

  function addGroup(job) {
    const {what, prompt, detail} = describe(job.req);
    const kind = job.req.type === 'interpolation' ? ' strip' : job.req.type === 'grid' ? ' sheet' : '';
    const title = el('div', {class: 'group-title', title: prompt},
      el('b', {text: what}), prompt ? ` · “${prompt}”` : '', detail ? ` · ${detail}` : '');
    const group = el('section', {class: `group${kind}`, 'data-job': job.id, 'aria-label': `${what} ${prompt}`},
      title, el('div', {class: 'cells'}, el('span', {class: 'muted small', text: 'waiting…'})));
    $('#gallery').prepend(group);
    return group;
  }

  function markGroup(job, text) {
    const cells = $('.cells', job.group);
    cells.replaceChildren(el('span', {class: 'muted small', text}));
  }

  function fillGroup(job) {
    const cells = $('.cells', job.group);
    cells.replaceChildren(...job.images.map((id) => card(id, job.req)));
  }

  const ratingIcon = (rating) => (rating > 0 ? [icon('up')] : rating < 0 ? [icon('down')] : []);

  function ratingClass(node, rating) {
    node.classList.toggle('rated-up', rating > 0);
    node.classList.toggle('rated-down', rating < 0);
  }

  function card(id, req) {
    const alt = `${req.prompt || req.model}${req.type ? ` (${req.type})` : ''}`;
    const img = el('img', {src: imageUrl(id), alt, loading: 'lazy', title: 'Show large'});
    img.addEventListener('click', () => showPreview(imageUrl(id)));
    const up = el('button', {type: 'button', class: 'rate-up', 'aria-pressed': 'false', title: 'Thumbs up',
      'aria-label': 'Thumbs up'}, icon('up'));
    const down = el('button', {type: 'button', class: 'rate-down', 'aria-pressed': 'false', title: 'Thumbs down',
      'aria-label': 'Thumbs down'}, icon('down'));
    const node = el('figure', {class: 'card', 'data-id': id}, img);
    up.addEventListener('click', () => rate(id, up.getAttribute('aria-pressed') === 'true' ? 0 : 1));
    down.addEventListener('click', () => rate(id, down.getAttribute('aria-pressed') === 'true' ? 0 : -1));
    const bar = el('div', {class: 'bar'}, up, down,
      req.type === 'style' ? null : el('button', {type: 'button', class: 'variations',
        title: 'Variations: same prompt, nearby seeds', 'aria-label': 'Variations', onclick: () => variationsOf(id)},
      icon('variations')),
      el('button', {type: 'button', title: 'Restore its parameters', 'aria-label': 'Restore parameters',
        onclick: () => restoreFromImage(id)}, icon('restore')),
      el('button', {type: 'button', class: 'use', title: 'Use as init image (in Style: as the picture to restyle)',
        'aria-label': 'Use this picture', onclick: () => (state.mode === 'style' ? useAsContent(id) : useAsInit(id))},
      icon('image')));
    node.append(bar);
    if (req.type !== 'grid') {
      paramsOf(id).then((p) => {
        if (p && p.seed !== undefined) node.prepend(el('span', {class: 'seed-tag', text: seedTag(p, req.type)}));
      }).catch(() => {});
    }
    return node;
  }

  // What tells the pictures of one job apart: the seed, the mixed-in seed, or the place along the way.
  function seedTag(p, type) {
    const mixed = p.variation_seed !== undefined && p.variation_seed !== null;
    if (type === 'interpolation' && mixed) return `t ${Number(p.variation_strength).toFixed(2)}`;
    if (mixed && p.variation_strength > 0) return `#${p.seed} ~${p.variation_seed}`;
    return `#${p.seed}`;
  }

  async function rate(id, rating) {
    try {
      await api(`${imageUrl(id)}/rating`, {method: 'POST', json: {rating}});
    } catch (e) {
      showError(`Cannot rate: ${e.message}`);
      return;
    }
    state.ratings.set(id, rating);
    for (const node of $$(`[data-id="${CSS.escape(id)}"]`)) {
      ratingClass(node, rating);
      const up = $('.rate-up', node);
      const down = $('.rate-down', node);
      if (up) up.setAttribute('aria-pressed', String(rating > 0));
      if (down) down.setAttribute('aria-pressed', String(rating < 0));
      const mark = $('.mark', node);
      if (mark) mark.replaceChildren(...ratingIcon(rating));
    }
    if ($('#history-rating').value !== '') loadHistory();
  }

  async function variationsOf(id) {
    clearError();
    let p;
    try {
      p = await paramsOf(id);
    } catch (e) {
      showError(`Cannot read that picture's parameters: ${e.message}`);
      return;
    }
    const m = modelFor(p) || state.model;
    if (!m) return;
    const req = {type: 'variations', model: m.name, prompt: p.prompt || '', n: num('#n'), seed: p.seed,
      size: p.size || num('#size'), variation_strength: num('#variation-strength')};
    if (m.kind === 'text') req.negative_prompt = p.negative_prompt || '';
    if (hasSamplers(m)) Object.assign(req, {steps: p.steps, guidance: p.guidance, sampler: p.sampler});
    await submit(req);
  }

  async function useAsInit(id) {
    try {
      const res = await fetch(imageUrl(id));
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      await setInit(new File([await res.blob()], `${id}.png`, {type: 'image/png'}));
      setMode('image');
    } catch (e) {
      showError(`Cannot use that picture: ${e.message}`);
    }
  }

  // ------------------------------------------------------------------ restoring parameters

  function modelFor(p, hint) {
    for (const name of [hint, p && p.studio_model, p && p.model]) {
      const m = name && state.models.find((x) => x.name === name);
      if (m) return m;
    }
    return null;
  }

  function setRange(sel, value) {
    if (value === undefined || value === null) return;
    $(sel).value = value;
    $(sel).dispatchEvent(new Event('input'));      // its <output> follows
  }

  function setIfOption(select, value) {
    if (value === undefined || value === null) return;
    if ($$('option', select).some((o) => o.value === String(value))) select.value = String(value);
  }

  function restore(p, hint) {
    if (!p || typeof p !== 'object') throw new Error('no parameters found');
    if (p.kind === 'style') { restoreStyle(p); return; }
    const m = modelFor(p, hint);
    if (m && m !== state.model) {
      $('#model').value = m.name;
      applyModel(true);
    }
    const model = state.model;
    const kind = model ? model.kind : 'text';
    if (kind === 'class') setIfOption($('#class'), p.prompt || '');
    else if (kind === 'text') {
      $('#prompt').value = p.prompt || '';
      $('#negative').value = p.negative_prompt || '';
    }
    if (p.seed !== undefined && p.seed !== null) {
      $('#seed').value = p.seed;
      setLocked(true);
    }
    if (p.steps) $('#steps').value = p.steps;
    if (p.guidance !== undefined && p.guidance !== null) $('#guidance').value = p.guidance;
    setIfOption($('#sampler'), p.sampler);
    setIfOption($('#size'), p.size);
    setIfOption($('#best-of'), p.best_of);
    if (p.init_image && p.strength) setRange('#strength', p.strength);
    if (['interpolation', 'grid', 'style'].includes(state.mode)) setMode('txt2img');
    const notes = [];
    if (!m && p.model) notes.push(`model “${p.model}” is not in the list`);
    if (p.init_image) notes.push('it was painted from an init image: choose it again');
    if (p.variation_seed !== undefined && p.variation_seed !== null) notes.push(`it mixed in seed ${p.variation_seed}`);
    toast(`Parameters restored${notes.length ? ` (${notes.join('; ')})` : ''}`);
  }

  // A style picture's settings; its pictures are only named in it, so they are chosen again.
  function restoreStyle(p) {
    setMode('style');
    setIfOption($('#method'), p.method);
    setIfOption($('#preserve'), p.preserve_color || '');
    if (p.method === 'adain') setRange('#alpha', p.alpha);
    if (p.method === 'gatys' && p.steps) $('#style-steps').value = p.steps;
    if (Array.isArray(p.size)) $('#style-size').value = Math.max(...p.size);
    methodChanged();
    toast('Style settings restored; choose the content and style pictures again');
  }

  async function restoreFromImage(id, hint) {
    clearError();
    try {
      restore(await paramsOf(id), hint);
      for (const node of $$('#history .item')) node.classList.toggle('restored', node.dataset.id === id);
    } catch (e) {
      showError(`Cannot restore the parameters: ${e.message}`);
    }
  }

  async function restoreFromFile(file) {
    clearError();
    if (!/png$/i.test(file.type) && !/\.png$/i.test(file.name)) {
      showError(`${file.name} is not a PNG: drop a picture painted by danqing (or one with A1111 parameters).`);
      return;
    }
    const form = new FormData();
    form.append('file', file, file.name);
    try {
      const data = await api('/api/params', {method: 'POST', form});
      restore(data && data.params && typeof data.params === 'object' ? data.params : data);
    } catch (e) {
      showError(`No parameters in ${file.name}: ${e.message}`);
    }
  }

  // ------------------------------------------------------------------ history

  let historyTimer = null;
  async function loadHistory(offset = state.history.offset) {
    const q = new URLSearchParams({limit: String(HISTORY_PAGE), offset: String(Math.max(0, offset))});
    const text = $('#history-q').value.trim();
    if (text) q.set('q', text);
    if ($('#history-model').value) q.set('model', $('#history-model').value);
    if ($('#history-rating').value !== '') q.set('rating', $('#history-rating').value);
    let data;
    try {
      data = await api(`/api/history?${q}`);
    } catch (e) {
      $('#history').replaceChildren(el('p', {class: 'empty', text: `Cannot load the history: ${e.message}`}));
      return;
    }
    const items = Array.isArray(data) ? data : (data && (data.images || data.items)) || [];
    const total = data && typeof data.total === 'number' ? data.total : null;
    state.history = {offset: Math.max(0, offset), total, count: items.length};
    const list = $('#history');
    if (!items.length) {
      list.replaceChildren(el('p', {class: 'empty', text: text || q.has('model') || q.has('rating')
        ? 'Nothing matches.' : 'No pictures yet.'}));
    } else {
      list.replaceChildren(...items.map(historyItem));
    }
    const page = Math.floor(state.history.offset / HISTORY_PAGE) + 1;
    const pages = total !== null ? Math.max(1, Math.ceil(total / HISTORY_PAGE)) : null;
    $('#history-page').textContent = pages ? `${page} / ${pages}` : `page ${page}`;
    $('#history-prev').disabled = state.history.offset === 0;
    $('#history-next').disabled = total !== null ? state.history.offset + items.length >= total
      : items.length < HISTORY_PAGE;
  }

  function historyItem(it) {
    const id = it.id || it.image_id;
    const p = it.params || {};
    if (it.params) state.params.set(id, it.params);
    const prompt = it.prompt ?? p.prompt ?? '';
    const seed = it.seed ?? p.seed;
    const rating = state.ratings.has(id) ? state.ratings.get(id) : Number(it.rating || 0);
    const label = [prompt || '(no prompt)', seed !== undefined && seed !== null ? `seed ${seed}` : '',
      it.model || p.model || ''].filter(Boolean).join(' · ');
    const node = el('button', {type: 'button', class: 'item', 'data-id': id, title: label,
      'aria-label': `Restore: ${label}`},
      el('img', {src: it.url || imageUrl(id), alt: prompt || 'picture', loading: 'lazy'}),
      el('span', {class: 'mark', 'aria-hidden': 'true'}, ...ratingIcon(rating)));
    ratingClass(node, rating);
    node.addEventListener('click', () => (state.mode === 'style' ? useAsContent(id) : restoreFromImage(id, it.model)));
    return node;
  }

  // ------------------------------------------------------------------ init image and mask

  // Upload a picture the user chose: {id, width, height}, or null after showing why not.
  async function uploadPicture(file, what) {
    if (!/^image\//.test(file.type) && !/\.(png|jpe?g|webp)$/i.test(file.name)) {
      showError(`${file.name} is not a picture.`);
      return null;
    }
    const form = new FormData();
    form.append('file', file, file.name || 'picture.png');
    try {
      return await api('/api/uploads', {method: 'POST', form});
    } catch (e) {
      showError(`Cannot upload the ${what}: ${e.message}`);
      return null;
    }
  }

  async function setInit(file) {
    clearError();
    const up = await uploadPicture(file, 'init image');
    if (!up) return;
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      const w = up.width || img.naturalWidth;
      const h = up.height || img.naturalHeight;
      state.init = {id: up.id, width: w, height: h};
      for (const c of [$('#init-canvas'), $('#mask-canvas')]) { c.width = w; c.height = h; }
      maskData.width = w;
      maskData.height = h;
      const ctx = $('#init-canvas').getContext('2d');
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(img, 0, 0, w, h);
      URL.revokeObjectURL(url);
      clearMask();
      const wrap = $('#canvas-wrap');
      const side = 192;
      wrap.style.width = `${w >= h ? side : Math.round(side * w / h)}px`;
      wrap.style.height = `${h >= w ? side : Math.round(side * h / w)}px`;
      wrap.hidden = false;
      $('#init-hint').hidden = true;
      const brush = $('#brush');
      brush.max = String(Math.max(2, Math.round(Math.max(w, h) / 2)));
      brush.value = String(Math.max(1, Math.round(Math.max(w, h) / 10)));
      $('#brush-out').value = brush.value;
    };
    img.onerror = () => showError(`Cannot show ${file.name}`);
    img.src = url;
  }

  function removeInit() {
    state.init = null;
    clearMask();
    $('#canvas-wrap').hidden = true;
    $('#init-hint').hidden = false;
    $('#init-file').value = '';
  }

  const maskData = document.createElement('canvas');   // the mask itself: white where to repaint, black elsewhere

  function clearMask() {
    const c = $('#mask-canvas');
    c.getContext('2d').clearRect(0, 0, c.width, c.height);
    const m = maskData.getContext('2d');
    m.fillStyle = '#000';
    m.fillRect(0, 0, maskData.width, maskData.height);
    state.mask.painted = false;
    state.mask.upload = null;
    updateImageNote();
  }

  function updateImageNote() {
    $('#image-note').textContent = state.mask.painted
      ? 'Inpainting: only the painted part is repainted.'
      : 'Paint over the picture to inpaint there; leave it bare for img2img.';
  }

  // A disc of whole pixels, so the mask stays crisp black and white even at 16 × 16.
  function stamp(x, y) {
    const r = num('#brush') / 2;
    const view = $('#mask-canvas').getContext('2d');
    const data = maskData.getContext('2d');
    view.fillStyle = 'rgba(255, 255, 255, 0.8)';
    data.fillStyle = '#fff';
    for (let py = Math.floor(y - r); py <= Math.ceil(y + r); py++) {
      for (let px = Math.floor(x - r); px <= Math.ceil(x + r); px++) {
        if ((px + 0.5 - x) ** 2 + (py + 0.5 - y) ** 2 <= r * r + 0.25) {
          view.clearRect(px, py, 1, 1);             // no build-up where strokes cross
          view.fillRect(px, py, 1, 1);
          data.fillRect(px, py, 1, 1);
        }
      }
    }
  }

  function brushAt(ev) {
    const c = $('#mask-canvas');
    const rect = c.getBoundingClientRect();
    return {x: (ev.clientX - rect.left) / rect.width * c.width, y: (ev.clientY - rect.top) / rect.height * c.height};
  }

  function paint(ev) {
    const p = brushAt(ev);
    const last = state.mask.last || p;
    const dist = Math.hypot(p.x - last.x, p.y - last.y);
    const n = Math.max(1, Math.ceil(dist / 0.5));
    for (let i = 1; i <= n; i++) stamp(last.x + (p.x - last.x) * i / n, last.y + (p.y - last.y) * i / n);
    state.mask.last = p;
    if (!state.mask.painted) {
      state.mask.painted = true;
      updateImageNote();
    }
    state.mask.upload = null;
  }

  async function uploadMask() {
    if (state.mask.upload) return state.mask.upload;
    const blob = await new Promise((resolve) => maskData.toBlob(resolve, 'image/png'));
    const form = new FormData();
    form.append('file', blob, 'mask.png');
    try {
      state.mask.upload = (await api('/api/uploads', {method: 'POST', form})).id;
    } catch (e) {
      throw new Error(`Cannot upload the mask: ${e.message}`);
    }
    return state.mask.upload;
  }

  // ------------------------------------------------------------------ style transfer

  // Which methods the server can run (AdaIN needs a trained decoder): the others are shown but disabled.
  function applyStyleInfo(info) {
    state.styleInfo = info;
    for (const o of $$('#method option')) {
      o.disabled = Boolean((info.unavailable || {})[o.value]);
      o.title = (info.unavailable || {})[o.value] || '';
    }
    if ($('#method').selectedOptions[0].disabled) $('#method').value = (info.methods || ['gatys'])[0];
    methodChanged();
  }

  function methodChanged() {
    const adain = $('#method').value === 'adain';
    $('#alpha-field').hidden = !adain;
    $('#style-steps-field').hidden = adain;
    const why = (state.styleInfo.unavailable || {}).adain;
    $('#method-note').textContent = adain ? 'One pass of a trained decoder: about a second.'
      : `Optimises the picture itself, step by step: about 100 s at 512 px.${why ? ` AdaIN is off: ${why}` : ''}`;
  }

  // The picture to restyle: {id, upload, url}, an upload (upload: true) or a picture of the history.
  function setContent(content) {
    if (state.content && state.content.url.startsWith('blob:')) URL.revokeObjectURL(state.content.url);
    state.content = content;
    const img = $('#content-img');
    img.hidden = !content;
    if (content) img.src = content.url;
    $('#content-hint').hidden = Boolean(content);
  }

  async function setContentFile(file) {
    clearError();
    const up = await uploadPicture(file, 'content picture');
    if (up) setContent({id: up.id, upload: true, url: URL.createObjectURL(file)});
  }

  function useAsContent(id) {
    clearError();
    setContent({id, upload: false, url: imageUrl(id)});
    setMode('style');
    for (const node of $$('#history .item')) node.classList.toggle('restored', node.dataset.id === id);
  }

  async function addStyles(files) {
    clearError();
    for (const file of files) {
      if (state.styles.length >= MAX_STYLES) {
        showError(`At most ${MAX_STYLES} style pictures.`);
        break;
      }
      const up = await uploadPicture(file, 'style picture');
      if (up) state.styles.push({id: up.id, url: URL.createObjectURL(file), weight: 1});
    }
    renderStyles();
  }

  function removeStyle(k) {
    URL.revokeObjectURL(state.styles[k].url);
    state.styles.splice(k, 1);
    renderStyles();
  }

  // One thumbnail per style picture; a weight each when there are several.
  function renderStyles() {
    const several = state.styles.length > 1;
    const picks = state.styles.map((s, k) => {
      const weight = el('input', {type: 'number', class: 'weight', min: 0, step: 0.1, value: s.weight,
        'aria-label': `Weight of style ${k + 1}`, hidden: !several});
      weight.addEventListener('input', () => { s.weight = weight.value; });
      return el('div', {class: 'style-pick'}, el('img', {src: s.url, alt: `Style ${k + 1}`}), weight,
        el('button', {type: 'button', class: 'small-btn remove', title: 'Remove', 'aria-label': `Remove style ${k + 1}`,
          text: '×', onclick: () => removeStyle(k)}));
    });
    $('#style-drop').replaceChildren(...(picks.length ? picks : [el('p', {class: 'drop-hint', text: 'Drop style pictures here'})]));
    $('#style-add').disabled = state.styles.length >= MAX_STYLES;
    $('#weights-hint').hidden = !several;
  }

  // ------------------------------------------------------------------ drag and drop anywhere

  // Where a dropped file goes (anywhere else: a PNG whose parameters to restore).
  const DROPS = [
    ['#init-drop', 'Drop to use it as the init image', (files) => setInit(files[0])],
    ['#content-drop', 'Drop to restyle this picture', (files) => setContentFile(files[0])],
    ['#style-drop', 'Drop to add style pictures', (files) => addStyles(files.slice(0, MAX_STYLES))],
  ];
  const dropTarget = (ev) => DROPS.find(([sel]) => ev.target.closest && ev.target.closest(sel));

  function wireDrops() {
    const overlay = $('#drop-overlay');
    const hasFiles = (ev) => ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes('Files');
    let depth = 0;
    document.addEventListener('dragenter', (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth += 1;
      overlay.hidden = false;
    });
    document.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) overlay.hidden = true;
    });
    document.addEventListener('dragover', (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      const target = dropTarget(ev);
      for (const [sel] of DROPS) $(sel).classList.toggle('over', Boolean(target && target[0] === sel));
      overlay.firstElementChild.textContent = target ? target[1] : 'Drop a PNG to restore its parameters';
    });
    document.addEventListener('drop', (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth = 0;
      overlay.hidden = true;
      for (const [sel] of DROPS) $(sel).classList.remove('over');
      const files = Array.from(ev.dataTransfer.files);
      if (!files.length) return;
      const target = dropTarget(ev);
      if (target) target[2](files);
      else restoreFromFile(files[0]);
    });
  }

  // ------------------------------------------------------------------ wiring

  // A drop zone that opens its file chooser on a click (when `clickable` says so) or on Enter and Space.
  function chooser(zone, input, clickable = () => true) {
    zone.addEventListener('click', (ev) => { if (clickable(ev)) input.click(); });
    zone.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); input.click(); }
    });
  }

  function wire() {
    $('#form').addEventListener('submit', (ev) => { ev.preventDefault(); generate(); });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); generate(); }
    });
    $('#cancel').addEventListener('click', cancelAll);
    for (const a of ['x', 'y']) $(`#grid-${a}-param`).addEventListener('change', gridPlaceholders);
    $('#model').addEventListener('change', () => applyModel(false));
    for (const tab of $$('.tabs [role="tab"]')) tab.addEventListener('click', () => setMode(tab.dataset.mode));
    $('#dice').addEventListener('click', () => { $('#seed').value = randomSeed(); });
    $('#dice-b').addEventListener('click', () => { $('#seed-b').value = randomSeed(); });
    $('#seed-lock').addEventListener('click', () => setLocked(!seedLocked()));
    $('#seed').addEventListener('input', () => setLocked(true));
    for (const [input, out, digits] of [['#strength', '#strength-out', 2], ['#variation-strength', '#variation-out', 2],
      ['#brush', '#brush-out', 0], ['#alpha', '#alpha-out', 2]]) {
      $(input).addEventListener('input', () => { $(out).value = Number($(input).value).toFixed(digits); });
    }
    // init image: click or keyboard opens the file chooser; painting on the mask does not
    const drop = $('#init-drop');
    chooser(drop, $('#init-file'), (ev) => !state.init || ev.target === drop);
    $('#init-file').addEventListener('change', () => { const f = $('#init-file').files[0]; if (f) setInit(f); });
    // style transfer
    chooser($('#content-drop'), $('#content-file'));
    $('#content-file').addEventListener('change', () => {
      const f = $('#content-file').files[0];
      if (f) setContentFile(f);
      $('#content-file').value = '';
    });
    $('#style-add').addEventListener('click', () => $('#style-file').click());
    $('#style-file').addEventListener('change', () => {
      addStyles(Array.from($('#style-file').files).slice(0, MAX_STYLES));
      $('#style-file').value = '';
    });
    $('#method').addEventListener('change', methodChanged);
    $('#init-remove').addEventListener('click', removeInit);
    $('#mask-clear').addEventListener('click', clearMask);
    const mask = $('#mask-canvas');
    mask.addEventListener('pointerdown', (ev) => {
      ev.preventDefault();
      mask.setPointerCapture(ev.pointerId);
      state.mask.drawing = true;
      state.mask.last = null;
      paint(ev);
    });
    mask.addEventListener('pointermove', (ev) => { if (state.mask.drawing) paint(ev); });
    const stop = () => { state.mask.drawing = false; state.mask.last = null; };
    mask.addEventListener('pointerup', stop);
    mask.addEventListener('pointercancel', stop);
    // history
    $('#history-q').addEventListener('input', () => {
      clearTimeout(historyTimer);
      historyTimer = setTimeout(() => loadHistory(0), 250);
    });
    $('#history-model').addEventListener('change', () => loadHistory(0));
    $('#history-rating').addEventListener('change', () => loadHistory(0));
    $('#history-refresh').addEventListener('click', () => loadHistory());
    $('#history-prev').addEventListener('click', () => loadHistory(state.history.offset - HISTORY_PAGE));
    $('#history-next').addEventListener('click', () => loadHistory(state.history.offset + HISTORY_PAGE));
    // theme
    $('#theme').addEventListener('click', () => {
      const root = document.documentElement;
      const dark = root.dataset.theme ? root.dataset.theme === 'dark'
        : !window.matchMedia('(prefers-color-scheme: light)').matches;
      root.dataset.theme = dark ? 'light' : 'dark';
      localStorage.setItem('danqing.theme', root.dataset.theme);
    });
    wireDrops();
  }

  function start() {
    const theme = localStorage.getItem('danqing.theme');
    if (theme) document.documentElement.dataset.theme = theme;
    $('#seed').value = randomSeed();
    $('#seed-b').value = randomSeed();
    setLocked(false);
    setMode('txt2img');
    renderStyles();
    methodChanged();
    wire();
    loadModels().then(() => loadHistory(0));
  }

  start();
})();
