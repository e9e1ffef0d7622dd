// Earlier pictures: the history panel (searched, filtered and paged by the server), and taking a picture's
// parameters back into the form, from the history, a result or a dropped PNG.
import {api, imageUrl, paramsOf} from './api.js';
import {$, $$, clearError, el, setIfOption, setRange, showError, toast} from './dom.js';
import {applyModel, homeMode, setLocked, setMode} from './form.js';
import {ratingClass, ratingIcon} from './gallery.js';
import {optionsFrom, setOptions} from './options.js';
import {HISTORY_PAGE, state} from './state.js';
import {methodChanged, useAsContent} from './transfer.js';

export async function loadHistory(offset = state.history.offset) {
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

// ------------------------------------------------------------------ restoring parameters

export function modelFor(p, hint) {
  for (const name of [hint, p && p.studio_model, p && p.model]) {
    const m = name && state.models.find((x) => x.name === name);
    if (m) return m;
  }
  return null;
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
  setOptions(optionsFrom(p, model));
  setIfOption($('#size'), p.size);
  setIfOption($('#best-of'), p.best_of);
  const strength = p.strength ?? (p.options && p.options.strength);        // newer pictures: among the options
  if (p.init_image && strength) setRange('#strength', strength);
  if (['interpolation', 'grid', 'style'].includes(state.mode)) setMode(homeMode(model));
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

export async function restoreFromImage(id, hint) {
  clearError();
  try {
    restore(await paramsOf(id), hint);
    for (const node of $$('#history .item')) node.classList.toggle('restored', node.dataset.id === id);
  } catch (e) {
    showError(`Cannot restore the parameters: ${e.message}`);
  }
}

export async function restoreFromFile(file) {
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
