// danqing studio: the page. Native ES modules, no build step; talks to the REST API described in docs/studio.md.
// The modules import each other's functions, so none of them acts while loading: this one, loaded last, starts
// the page.
import {$, $$} from './dom.js';
import {applyModel, gridPlaceholders, loadModels, randomSeed, seedLocked, setLatent, setLocked, setMode} from './form.js';
import {loadHistory, restoreFromFile} from './history.js';
import {clearMask, paint, removeInit, setInit} from './init-image.js';
import {cancelAll, generate} from './jobs.js';
import {wireSketch} from './sketch.js';
import {HISTORY_PAGE, MAX_STYLES, state} from './state.js';
import {addStyles, methodChanged, renderStyles, setContentFile} from './transfer.js';

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
  $('#latent-clear').addEventListener('click', () => setLatent(null));
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
  let historyTimer = null;
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
  wireSketch();
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
