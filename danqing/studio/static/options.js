// A model's own sampling knobs, one control each, drawn from its "options" in GET /api/models:
// [{name, type: int|float|str|bool, default, min, max, above, choices, help, label}].  A control's id is the
// option's name (steps, guidance, sampler, ...) unless another element of the page has that id already.
import {$, el, setIfOption} from './dom.js';

// Options the form has its own controls for, sent as top-level fields (strength: the From image panel's slider).
const OWN = new Set(['strength', 'seed', 'size', 'n', 'prompt', 'negative_prompt']);

const controls = new Map();        // option name -> {option, input}: the controls of the chosen model

// A server from before "options" describes steps, guidance and sampler through `samplers` and `defaults`.
export function optionsOf(m) {
  if (!m) return [];
  if (Array.isArray(m.options)) return m.options.filter((o) => o && o.name && !OWN.has(o.name));
  if (!(m.samplers && m.samplers.length)) return [];
  const d = m.defaults || {};
  return [
    {name: 'steps', type: 'int', default: d.steps || 20, min: 1, max: 200, label: 'steps'},
    {name: 'guidance', type: 'float', default: d.guidance ?? 4, min: 0, max: 30, step: 0.5, label: 'guidance'},
    {name: 'sampler', type: 'str', default: m.samplers.includes(d.sampler) ? d.sampler : m.samplers[0],
      choices: m.samplers, label: 'sampler'},
  ];
}

export const hasOption = (m, name) => optionsOf(m).some((o) => o.name === name);

// Requests carry the options as {options: {...}} when the server lists them, else as top-level fields.
export const takesOptions = (m) => Boolean(m && Array.isArray(m.options));

export const optionOf = (name) => (controls.has(name) ? controls.get(name).option : null);

const isNumber = (o) => o.type === 'int' || o.type === 'float';

// The spin buttons' step: the option's own, or one that suits its range and still lands on its default.
function stepOf(o) {
  if (o.type === 'int') return 1;
  if (typeof o.step === 'number') return o.step;
  const low = lowest(o);
  if (typeof low !== 'number' || typeof o.max !== 'number') return 'any';
  const span = o.max - low;
  const step = span <= 2 ? 0.05 : span <= 100 ? 0.5 : 1;
  const k = typeof o.default === 'number' ? (o.default - low) / step : 0;
  return Math.abs(k - Math.round(k)) < 1e-6 ? step : 'any';
}

// `above` is an exclusive bound, which a number field cannot say: it shows as the minimum, the server says the rest.
const lowest = (o) => (typeof o.min === 'number' ? o.min : o.above);

function control(o) {
  const id = document.getElementById(o.name) ? `option-${o.name}` : o.name;
  const text = String(o.label || o.name.replace(/_/g, ' '));
  const title = o.help || null;
  let input;
  if (Array.isArray(o.choices) && o.choices.length) {
    input = el('select', {id, title}, ...o.choices.map((c) => el('option', {value: c, text: String(c)})));
  } else if (o.type === 'bool') {
    input = el('input', {type: 'checkbox', id, title});
  } else if (isNumber(o)) {
    input = el('input', {type: 'number', id, title, min: lowest(o), max: o.max, step: stepOf(o)});
  } else {
    input = el('input', {type: 'text', id, title, spellcheck: 'false'});
  }
  const label = el('label', {for: id, title, text: text.charAt(0).toUpperCase() + text.slice(1)});
  const wide = input.tagName === 'SELECT' || input.type === 'text';
  return {input, field: el('div', {class: wide ? 'field wide' : 'field', 'data-option': o.name}, label, input)};
}

function put(c, value) {
  if (value === undefined || value === null) return;
  if (c.option.type === 'bool') c.input.checked = value === true || value === 'true';
  else if (c.input.tagName === 'SELECT') setIfOption(c.input, value);
  else c.input.value = value;
}

function read(c) {
  if (c.option.type === 'bool') return c.input.checked;
  const raw = c.input.value.trim();
  if (raw === '') return undefined;                 // left empty: the model's default
  return isNumber(c.option) ? Number(raw) : raw;
}

// Controls for the model's options; `keep` carries the values of options that the last model had too.
export function renderOptions(m, keep) {
  const before = new Map([...controls].map(([name, c]) => [name, c.option.type === 'bool' ? c.input.checked
    : c.input.value]));
  const box = $('#sampling-fields');
  box.replaceChildren();
  controls.clear();
  for (const o of optionsOf(m)) {
    const {input, field} = control(o);
    const c = {option: o, input};
    put(c, o.default);
    if (keep && before.has(o.name) && before.get(o.name) !== '') put(c, before.get(o.name));
    controls.set(o.name, c);
    box.append(field);
  }
  box.hidden = controls.size === 0;
}

// The values of the form's controls, {name: value}; an empty number field is left out (the model's default).
export function optionValues() {
  const values = {};
  for (const [name, c] of controls) {
    const v = read(c);
    if (v !== undefined) values[name] = v;
  }
  return values;
}

// A picture's option values, {name: value}: from its `options`, or its top-level fields (older pictures).
export function optionsFrom(p, m) {
  const nested = p && p.options && typeof p.options === 'object' ? p.options : {};
  const values = {};
  for (const o of optionsOf(m)) {
    const v = o.name in nested ? nested[o.name] : p && p[o.name];
    if (v !== undefined && v !== null) values[o.name] = v;
  }
  return values;
}

export function setOptions(values) {
  for (const [name, v] of Object.entries(values)) if (controls.has(name)) put(controls.get(name), v);
}
