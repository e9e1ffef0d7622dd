// The results: one group per job, a card per picture with its rating and what to do with it next.
import {api, imageUrl, paramsOf} from './api.js';
import {$, $$, clearError, el, icon, num, showError} from './dom.js';
import {describe, homeMode, setLatent, setMode, supports} from './form.js';
import {loadHistory, modelFor, restoreFromImage} from './history.js';
import {setInit} from './init-image.js';
import {showPreview, submit} from './jobs.js';
import {optionsFrom, takesOptions} from './options.js';
import {state} from './state.js';
import {useAsContent} from './transfer.js';

export function addGroup(job) {
  const {what, prompt, detail} = describe(job.req);
  const kind = job.req.type === 'interpolation' ? ' strip' : job.req.type === 'grid' ? ' sheet' : '';
  const title = el('div', {class: 'group-title', title: prompt},
    el('b', {text: what}), prompt ? ` · “${prompt}”` : '', detail ? ` · ${detail}` : '');
  const group = el('section', {class: `group${kind}`, 'data-job': job.id, 'aria-label': `${what} ${prompt}`},
    title, el('div', {class: 'cells'}, el('span', {class: 'muted small', text: 'waiting…'})));
  $('#gallery').prepend(group);
  return group;
}

export function markGroup(job, text) {
  const cells = $('.cells', job.group);
  cells.replaceChildren(el('span', {class: 'muted small', text}));
}

export function fillGroup(job) {
  const cells = $('.cells', job.group);
  cells.replaceChildren(...job.images.map((id) => card(id, job.req)));
}

export const ratingIcon = (rating) => (rating > 0 ? [icon('up')] : rating < 0 ? [icon('down')] : []);

export function ratingClass(node, rating) {
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
    ['style', 'translate'].includes(req.type) ? null : el('button', {type: 'button', class: 'variations',
      title: 'Variations: same prompt, nearby seeds', 'aria-label': 'Variations', onclick: () => variationsOf(id, req.type)},
    icon('variations')),
    el('button', {type: 'button', title: 'Restore its parameters', 'aria-label': 'Restore parameters',
      onclick: () => restoreFromImage(id)}, icon('restore')),
    el('button', {type: 'button', class: 'use', title: 'Use as init image (in Style: as the picture to restyle)',
      'aria-label': 'Use this picture', onclick: () => (state.mode === 'style' ? useAsContent(id) : useAsInit(id))},
    icon('image')));
  if (req.type === 'project') {
    bar.append(el('button', {type: 'button', class: 'from-latent', title: 'Paint from this projection: '
      + 'repaint it with other options, vary it, or interpolate it with a seed', 'aria-label': 'Paint from this projection',
    onclick: () => paintFrom(id, req.model)}, icon('latent')));
  }
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

// A picture's parameters, or null (the error shown) when they cannot be read.
async function paramsOrNull(id) {
  clearError();
  try {
    return await paramsOf(id);
  } catch (e) {
    showError(`Cannot read that picture's parameters: ${e.message}`);
    return null;
  }
}

async function variationsOf(id, type) {
  const p = await paramsOrNull(id);
  if (!p) return;
  const m = modelFor(p) || state.model;
  if (!m) return;
  const req = {type: 'variations', model: m.name, prompt: p.prompt || '', n: num('#n'), seed: p.seed,
    size: p.size || num('#size'), variation_strength: num('#variation-strength')};
  if (type === 'project') req.latent = id;                   // near the projection: its latent moved towards seeds
  else if (p.latent && state.latent && state.latent.hash === p.latent) req.latent = state.latent.id;
  if (m.kind === 'text') req.negative_prompt = p.negative_prompt || '';
  const options = optionsFrom(p, m);
  if (!takesOptions(m)) Object.assign(req, options);
  else if (Object.keys(options).length) req.options = options;
  await submit(req);
}

async function paintFrom(id, model) {
  const p = await paramsOrNull(id);
  if (!p) return;
  if ($('#model').value !== model && state.models.some((m) => m.name === model)) {
    $('#model').value = model;
    $('#model').dispatchEvent(new Event('change'));
  }
  setLatent({id, model, hash: p.latent});
  setMode('txt2img');
}

async function useAsInit(id) {
  try {
    const res = await fetch(imageUrl(id));
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    await setInit(new File([await res.blob()], `${id}.png`, {type: 'image/png'}));
    setMode(supports(state.model, 'translate') ? homeMode(state.model) : 'image');   // a translator: its Sketch tab
  } catch (e) {
    showError(`Cannot use that picture: ${e.message}`);
  }
}
