// The Style tab: the picture to restyle, the style pictures and their weights, and the method.
import {imageUrl} from './api.js';
import {$, $$, clearError, el, showError} from './dom.js';
import {setMode} from './form.js';
import {uploadPicture} from './init-image.js';
import {MAX_STYLES, state} from './state.js';

// Which methods the server can run (AdaIN needs a trained decoder): the others are shown but disabled.
export function applyStyleInfo(info) {
  state.styleInfo = info;
  for (const o of $$('#method option')) {
    o.disabled = Boolean((info.unavailable || {})[o.value]);
    o.title = (info.unavailable || {})[o.value] || '';
  }
  if ($('#method').selectedOptions[0].disabled) $('#method').value = (info.methods || ['gatys'])[0];
  methodChanged();
}

export function methodChanged() {
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

export async function setContentFile(file) {
  clearError();
  const up = await uploadPicture(file, 'content picture');
  if (up) setContent({id: up.id, upload: true, url: URL.createObjectURL(file)});
}

export function useAsContent(id) {
  clearError();
  setContent({id, upload: false, url: imageUrl(id)});
  setMode('style');
  for (const node of $$('#history .item')) node.classList.toggle('restored', node.dataset.id === id);
}

export async function addStyles(files) {
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
export function renderStyles() {
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
