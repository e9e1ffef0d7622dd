// Small helpers for building and reading the page, and the messages it shows.

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

export const el = (tag, attrs = {}, ...children) => {
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
export const icon = (name) => {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'i');
  svg.setAttribute('aria-hidden', 'true');
  const use = document.createElementNS(SVG, 'use');
  use.setAttribute('href', `#i-${name}`);
  svg.append(use);
  return svg;
};

export const num = (sel) => Number($(sel).value);

export function fillSelect(select, values, label = (v) => String(v)) {
  const keep = select.value;
  select.replaceChildren(...values.map((v) => el('option', {value: v, text: label(v)})));
  if (values.map(String).includes(keep)) select.value = keep;
}

export function setRange(sel, value) {
  if (value === undefined || value === null) return;
  $(sel).value = value;
  $(sel).dispatchEvent(new Event('input'));      // its <output> follows
}

export function setIfOption(select, value) {
  if (value === undefined || value === null) return;
  if ($$('option', select).some((o) => o.value === String(value))) select.value = String(value);
}

// ------------------------------------------------------------------ messages

export function showError(message) {
  const box = $('#error');
  box.textContent = message;
  box.hidden = !message;
}
export const clearError = () => showError('');

let toastTimer = null;
export function toast(message) {
  const t = $('#toast');
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 3500);
}

export const setStatus = (text) => { $('#status').textContent = text; };
