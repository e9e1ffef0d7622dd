// The form around the chosen model: the models, the fields each one takes, the mode tabs, the seed, and the job
// request the form describes.
import {api} from './api.js';
import {$, $$, el, fillSelect, icon, num, showError} from './dom.js';
import {uploadMask} from './init-image.js';
import {hasOption, optionOf, optionsOf, optionValues, renderOptions, takesOptions} from './options.js';
import {padForModel, padShown, uploadDrawing} from './sketch.js';
import {GRID_PARAMS, state} from './state.js';
import {applyStyleInfo} from './transfer.js';

export function supports(m, feature) {
  const s = m && m.supports;
  if (Array.isArray(s)) return s.includes(feature);
  if (s && typeof s === 'object' && feature in s) return Boolean(s[feature]);
  return feature !== 'best_of';
}

export async function loadModels() {
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
export function applyModel(keep) {
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
  renderOptions(m, keep);
  $('#best-field').hidden = !supports(m, 'best_of');
  for (const sel of ['label[for="variation-strength"]', '#variation-strength', '#variation-out']) {
    $(sel).hidden = !supports(m, 'variations');       // a model that translates pictures has no variations
  }
  if (!supports(m, 'best_of')) $('#best-of').value = '1';
  if (!keep) $('#size').value = String((m.defaults || {}).size || m.image_size || sizes[0]);
  // a picture-to-picture model only translates (the Sketch tab, or an uploaded picture there)
  const translates = supports(m, 'translate');
  const modes = {txt2img: !translates, image: supports(m, 'img2img') || supports(m, 'inpaint'),
    interpolation: supports(m, 'interpolation'), grid: supports(m, 'grid'), style: true,
    project: supports(m, 'project'), sketch: translates};
  $('#tab-sketch').hidden = !translates;
  $('#uncond-note').textContent = translates ? 'This model translates pictures: draw one, or choose one.'
    : 'This model paints without a prompt.';
  padForModel(m);
  fillSelect($('#space'), m.spaces || [], (s) => s.toUpperCase());
  if (state.latent && state.latent.model !== m.name) setLatent(null);     // a projection belongs to its model
  for (const [mode, ok] of Object.entries(modes)) {
    const tab = $(`#tab-${mode}`);
    tab.disabled = !ok;
    tab.title = ok ? '' : `${m.name} cannot do this`;
  }
  if (!modes[state.mode]) setMode(homeMode(m));
  // prompt and seed, then every option of the model (strength only where it takes an input picture)
  const gridParams = [...GRID_PARAMS, ...optionsOf(m).map((o) => o.name), 'strength'].filter((p, i, all) => {
    if (all.indexOf(p) !== i) return false;
    if (p === 'prompt') return kind !== 'unconditional';
    if (p === 'strength') return modes.image && (!takesOptions(m) || m.options.some((o) => o.name === p));
    return true;
  });
  for (const [sel, fallback] of [['#grid-x-param', 'seed'], ['#grid-y-param', hasOption(m, 'guidance') ? 'guidance' : 'seed']]) {
    const select = $(sel);
    const before = select.value;
    fillSelect(select, gridParams);
    select.value = gridParams.includes(before) ? before : fallback;
  }
  gridPlaceholders();
  $('#model-info').textContent = [m.family, kind, `${m.image_size} px`].filter(Boolean).join(' · ');
}

export function gridPlaceholders() {
  const m = state.model;
  const samplers = (optionOf('sampler') || {}).choices || [];
  const examples = {seed: '1, 2, 3', steps: '10, 20, 40', guidance: '1, 3, 5', strength: '0.3, 0.6, 0.9',
    sampler: samplers.slice(0, 3).join(', '), prompt: 'a red apple | a green pear'};
  if (m && m.kind === 'class') examples.prompt = (m.class_names || []).slice(0, 3).join(', ');
  for (const a of ['x', 'y']) {
    const eg = examples[$(`#grid-${a}-param`).value] || '';
    $(`#grid-${a}-values`).placeholder = a === 'y' ? `optional, e.g. ${eg}` : `e.g. ${eg}`;
  }
}

// The tab a model opens on: Sketch for a picture-to-picture model, else Paint.
export const homeMode = (m) => (supports(m, 'translate') ? 'sketch' : 'txt2img');

export function setMode(mode) {
  state.mode = mode;
  for (const tab of $$('.tabs [role="tab"]')) tab.setAttribute('aria-selected', String(tab.dataset.mode === mode));
  for (const panel of $$('.mode-panel')) panel.hidden = !panel.dataset.modes.split(' ').includes(mode);
  $('#n-field').hidden = mode === 'interpolation' || mode === 'grid';
  $('#form').dataset.mode = mode;            // style transfer hides the painting fields (.paint-only)
  $('#sketch-stage').hidden = mode !== 'sketch';
  $('.stage').classList.toggle('sketching', mode === 'sketch');
  if (mode === 'sketch') padShown();
}

// ------------------------------------------------------------------ the seed

export const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0] % 2147483648;

export function setLocked(locked) {
  const b = $('#seed-lock');
  b.setAttribute('aria-pressed', String(locked));
  b.replaceChildren(icon(locked ? 'lock' : 'unlock'));
  b.title = locked ? 'Locked: this seed is kept' : 'Unlocked: a new seed for every painting';
}
export const seedLocked = () => $('#seed-lock').getAttribute('aria-pressed') === 'true';

// The seed of the next painting: a new one unless the lock keeps the one shown.
export function nextSeed() {
  const v = $('#seed').value.trim();
  if (!seedLocked() || v === '' || !/^\d+$/.test(v)) $('#seed').value = randomSeed();
  return Number($('#seed').value);
}

// ------------------------------------------------------------------ building requests

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
  const options = optionValues();
  if (!takesOptions(m)) Object.assign(req, options);
  else if (Object.keys(options).length) req.options = options;
  if (supports(m, 'best_of')) req.best_of = num('#best-of');
}

// An axis's values, typed like the field they stand for; what does not parse goes as typed, for the server to name.
function gridValues(param, text) {
  const sep = param === 'prompt' && text.includes('|') ? '|' : ',';
  const parts = text.split(sep).map((s) => s.trim()).filter((s) => s !== '');
  if (!parts.length) throw new Error(`give the ${param} values, separated by commas`);
  const type = {seed: 'int', strength: 'float', prompt: 'str'}[param] || (optionOf(param) || {}).type;
  if (type === 'int') return parts.map((s) => (/^-?\d+$/.test(s) ? Number(s) : s));
  if (type === 'float') return parts.map((s) => (Number.isFinite(Number(s)) ? Number(s) : s));
  if (type === 'bool') return parts.map((s) => ({true: true, false: false}[s.toLowerCase()] ?? s));
  return parts;
}

export async function buildRequest() {
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
    if (state.latent) {                        // the projection once, with the options of the form
      Object.assign(req, {latent: state.latent.id, n: 1});
      delete req.best_of;
    }
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
  } else if (state.mode === 'sketch') {        // the picture chosen there, else the drawing on the pad
    const init = state.init ? state.init.id : await uploadDrawing();
    return translateRequest(m, init, num('#n'), nextSeed());
  } else if (state.mode === 'project') {
    if (!state.init) throw new Error('Choose or drop the picture to find first.');
    const find = {type: 'project', model: m.name, prompt: req.prompt || '', init_image: state.init.id,
      steps: num('#project-steps'), space: $('#space').value, seed: nextSeed()};
    if (m.kind === 'class' && !find.prompt) throw new Error('Choose the class of the picture first.');
    return find;
  } else if (state.mode === 'interpolation') {
    req.type = 'interpolation';
    delete req.best_of;
    req.seed = nextSeed();
    if ($('#seed-b').value.trim() === '') $('#seed-b').value = randomSeed();
    req.seed_b = num('#seed-b');
    req.frames = num('#frames');
    if (state.latent) req.latent = state.latent.id;
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

// A translate job: the picture `init` (an upload id) through a picture-to-picture model, with its options.
export function translateRequest(m, init, n, seed) {
  const req = {type: 'translate', model: m.name, init_image: init, n, seed};
  samplingFields(m, req);
  return req;
}

// Paint from a projection (a project job's picture): {id, model, hash}, or null for the seeds' noise again.
export function setLatent(latent) {
  state.latent = latent;
  $('#latent-chip').hidden = !latent;
  if (latent) $('#latent-thumb').src = `/api/images/${encodeURIComponent(latent.id)}`;
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

export function describe(req) {
  const seed = req.seed !== undefined && req.seed !== null ? `seed ${req.seed}` : '';
  const what = {
    txt2img: 'Paint', img2img: 'img2img', inpaint: 'Inpaint', variations: 'Variations',
    interpolation: 'Interpolation', grid: 'X/Y grid', style: 'Style transfer', project: 'Projection',
    translate: 'Translate',
  }[req.type] || req.type;
  const bits = [];
  if (req.type === 'style') bits.push(req.method, `${req.styles.length} style${req.styles.length > 1 ? 's' : ''}`);
  else if (req.type === 'interpolation') bits.push(`seed ${req.seed} → ${req.seed_b}, ${req.frames} frames`);
  else if (req.type === 'grid') bits.push(req.y ? `${req.x.param} × ${req.y.param}` : req.x.param, seed);
  else if (req.type === 'variations') bits.push(`near seed ${req.seed}, strength ${req.variation_strength}`);
  else if (req.type === 'project') bits.push((req.space || '').toUpperCase(), seed);
  else bits.push(seed);
  if (req.latent) bits.push('from a projection');
  const steps = req.steps || (req.options && req.options.steps);
  if (steps) bits.push(`${steps} steps`);
  return {what, prompt: req.prompt || '', detail: bits.filter(Boolean).join(' · ')};
}
