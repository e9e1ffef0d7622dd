// The Sketch tab of a picture-to-picture model (Pix2Pix, CycleGAN, CUT): a pad to draw on and, beside it, the
// model's picture of the drawing, asked for after every stroke (POST /api/sketch: answered at once, not queued,
// not kept). Keep sends the drawing as a translate job, which lands in the history with its parameters.
//
// The pad is drawn at SCALE times the model's picture side and scaled down, smoothed, when sent: lines come out
// antialiased, like the sketches such models are trained on. Strokes are kept as points in [0, 1], so undo
// redraws them, and a drawing survives a change of model (of any picture size).
import {api, apiBlob} from './api.js';
import {$, clearError, num, showError} from './dom.js';
import {supports, translateRequest} from './form.js';
import {submit} from './jobs.js';
import {optionValues, takesOptions} from './options.js';
import {state} from './state.js';

const SCALE = 4;               // pad pixels per pixel of the model's picture
const DEBOUNCE_MS = 150;       // after a stroke, before asking for the picture
const ERROR = 'Sketch pad: ';  // the start of this pad's errors (a good answer takes them away again)
const TYPING = 'textarea, select, [contenteditable], input:not([type="range"]):not([type="checkbox"])';

const pad = {
  side: 0,                     // the model's picture side (0: no translating model chosen)
  strokes: [],                 // {tool, width, points: [[x, y], ...]} or {clear: true}, oldest first
  current: null,               // the stroke being drawn
  tool: 'pen',
  generation: 0,               // bumped on a change of model: answers for an older one are dropped
  busy: false,                 // a request is on its way
  again: false,                // ... and the drawing changed since it left
  timer: null,
  url: null,                   // the object URL of the picture shown
};
const small = document.createElement('canvas');       // the drawing at the model's size, as it is sent

const canvas = () => $('#sketch-pad');
const active = () => state.mode === 'sketch' && pad.side > 0;

// ------------------------------------------------------------------ drawing

function drawStroke(g, s, from = 0) {
  const {width, height} = g.canvas;
  const pts = s.points.map(([x, y]) => [x * width, y * height]);
  g.strokeStyle = g.fillStyle = s.tool === 'eraser' ? '#fff' : '#000';
  g.lineWidth = s.width * SCALE;
  g.lineCap = g.lineJoin = 'round';
  g.beginPath();
  if (pts.length === 1) {                              // a dot
    g.arc(pts[0][0], pts[0][1], g.lineWidth / 2, 0, 2 * Math.PI);
    g.fill();
    return;
  }
  const start = Math.max(0, from - 1);
  g.moveTo(...pts[start]);
  for (const p of pts.slice(start + 1)) g.lineTo(...p);
  g.stroke();
}

// The strokes since the last clear, on white.
function redraw() {
  const g = canvas().getContext('2d');
  g.fillStyle = '#fff';
  g.fillRect(0, 0, g.canvas.width, g.canvas.height);
  const last = pad.strokes.map((s) => Boolean(s.clear)).lastIndexOf(true);
  for (const s of pad.strokes.slice(last + 1)) drawStroke(g, s);
  updateButtons();
}

function updateButtons() {
  $('#sketch-undo').disabled = pad.strokes.length === 0;
  const last = pad.strokes[pad.strokes.length - 1];
  $('#sketch-clear').disabled = !last || Boolean(last.clear);
}

// Where the pointer is, as fractions of the drawing (inside the canvas's border).
function at(ev) {
  const c = canvas();
  const r = c.getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((ev.clientX - r.left - c.clientLeft) / c.clientWidth),
    clamp((ev.clientY - r.top - c.clientTop) / c.clientHeight)];
}

function strokeStart(ev) {
  if (!pad.side || (ev.pointerType === 'mouse' && ev.button !== 0)) return;
  ev.preventDefault();
  canvas().setPointerCapture(ev.pointerId);
  const eraser = pad.tool === 'eraser' || (ev.buttons & 32) !== 0;        // a pen's eraser end
  pad.current = {tool: eraser ? 'eraser' : 'pen', width: num('#sketch-size'), points: [at(ev)]};
  drawStroke(canvas().getContext('2d'), pad.current);
  clearTimeout(pad.timer);
}

function strokeMove(ev) {
  if (!pad.current) return;
  const from = pad.current.points.length;
  const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [];  // every point the pointer passed
  for (const e of events.length ? events : [ev]) pad.current.points.push(at(e));
  drawStroke(canvas().getContext('2d'), pad.current, from);
}

function strokeEnd() {
  if (!pad.current) return;
  pad.strokes.push(pad.current);
  pad.current = null;
  updateButtons();
  schedule();
}

export function undo() {
  if (!pad.strokes.length) return;
  pad.strokes.pop();
  redraw();
  schedule();
}

function clearPad() {
  const last = pad.strokes[pad.strokes.length - 1];
  if (!last || last.clear) return;
  pad.strokes.push({clear: true});                     // undone like a stroke
  redraw();
  schedule();
}

function setTool(tool) {
  pad.tool = tool;
  $('#sketch-pen').setAttribute('aria-pressed', String(tool === 'pen'));
  $('#sketch-eraser').setAttribute('aria-pressed', String(tool === 'eraser'));
}

// ------------------------------------------------------------------ the drawing as the model sees it

function shrunk() {
  small.width = small.height = pad.side;
  const g = small.getContext('2d', {willReadFrequently: true});
  g.imageSmoothingEnabled = true;
  g.imageSmoothingQuality = 'high';
  g.drawImage(canvas(), 0, 0, pad.side, pad.side);
  return small;
}

// A pad of one colour has nothing to translate (the server says the same).
function blank(c) {
  const d = c.getContext('2d', {willReadFrequently: true}).getImageData(0, 0, c.width, c.height).data;
  for (let i = 4; i < d.length; i += 4) {
    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return false;
  }
  return true;
}

const pngOf = (c) => new Promise((resolve) => c.toBlob(resolve, 'image/png'));

function formOf(blob) {
  const form = new FormData();
  form.append('file', blob, 'sketch.png');
  return form;
}

// The drawing as an upload id (for a translate job); an Error saying what to do when the pad is blank.
export async function uploadDrawing() {
  const c = shrunk();
  if (blank(c)) throw new Error('Draw on the sketch pad first (or choose a picture to translate).');
  try {
    return (await api('/api/uploads', {method: 'POST', form: formOf(await pngOf(c))})).id;
  } catch (e) {
    throw new Error(`Cannot upload the drawing: ${e.message}`);
  }
}

// ------------------------------------------------------------------ the live picture

// The seed in the field as it stands (the pad does not draw new ones: the picture would change at every stroke).
function seedShown() {
  const v = $('#seed').value.trim();
  return /^\d+$/.test(v) ? Number(v) : 0;
}

export function schedule() {
  clearTimeout(pad.timer);
  if (active()) pad.timer = setTimeout(livePicture, DEBOUNCE_MS);
}

function showHint() {
  $('#sketch-out').hidden = true;
  $('#sketch-hint').hidden = false;
  $('#sketch-ms').textContent = '';
}

function showPicture(blob, ms) {
  if (pad.url) URL.revokeObjectURL(pad.url);
  pad.url = URL.createObjectURL(blob);
  const img = $('#sketch-out');
  img.classList.toggle('small', pad.side <= 128);
  img.src = pad.url;
  img.hidden = false;
  $('#sketch-hint').hidden = true;
  $('#sketch-ms').textContent = `· ${Math.round(ms)} ms`;
  if ($('#error').textContent.startsWith(ERROR)) clearError();
}

// Ask for the picture of the drawing; one request at a time, and the newest drawing when it comes back.
async function livePicture() {
  if (!active()) return;
  if (pad.busy) { pad.again = true; return; }
  const c = shrunk();
  if (blank(c)) { showHint(); return; }
  pad.busy = true;
  pad.again = false;
  const generation = pad.generation;
  const m = state.model;
  const q = new URLSearchParams({model: m.name, seed: String(seedShown())});
  if (takesOptions(m)) q.set('options', JSON.stringify(optionValues()));
  const started = performance.now();
  try {
    const picture = await apiBlob(`/api/sketch?${q}`, {method: 'POST', form: formOf(await pngOf(c))});
    if (generation === pad.generation) showPicture(picture, performance.now() - started);
  } catch (e) {
    if (generation === pad.generation) showError(ERROR + e.message.replace(/\s*\n\s*/g, '; '));
  } finally {
    pad.busy = false;
    if (pad.again) livePicture();
  }
}

// Keep: the drawing as a translate job, with the seed and options of the picture shown beside it.
async function keep() {
  clearError();
  let init;
  try {
    init = await uploadDrawing();
  } catch (e) {
    showError(e.message);
    return;
  }
  await submit(translateRequest(state.model, init, 1, seedShown()));
}

// ------------------------------------------------------------------ the model and the mode

// The pad for the chosen model: drawn at SCALE times its picture side (nothing for a model that does not translate).
export function padForModel(m) {
  pad.generation += 1;
  pad.side = supports(m, 'translate') ? Number(m.image_size) || 0 : 0;
  if (!pad.side) return;
  const c = canvas();
  c.width = c.height = pad.side * SCALE;
  redraw();
  showHint();
  schedule();
}

// The tab was opened: the picture of the drawing as it stands (the options or the seed may have changed).
export const padShown = () => schedule();

export function wireSketch() {
  const c = canvas();
  c.addEventListener('pointerdown', strokeStart);
  c.addEventListener('pointermove', strokeMove);
  c.addEventListener('pointerup', strokeEnd);
  c.addEventListener('pointercancel', strokeEnd);
  $('#sketch-pen').addEventListener('click', () => setTool('pen'));
  $('#sketch-eraser').addEventListener('click', () => setTool('eraser'));
  $('#sketch-undo').addEventListener('click', undo);
  $('#sketch-clear').addEventListener('click', clearPad);
  $('#sketch-keep').addEventListener('click', keep);
  $('#sketch-size').addEventListener('input', () => { $('#sketch-size-out').value = $('#sketch-size').value; });
  // the picture follows the model's options and the seed too
  $('#sampling-fields').addEventListener('change', schedule);
  $('#seed').addEventListener('change', schedule);
  $('#dice').addEventListener('click', schedule);
  document.addEventListener('keydown', (ev) => {          // Ctrl/Cmd+Z, unless it undoes typing
    const undoKey = (ev.ctrlKey || ev.metaKey) && !ev.shiftKey && ev.key.toLowerCase() === 'z';
    if (!undoKey || state.mode !== 'sketch' || (ev.target.closest && ev.target.closest(TYPING))) return;
    ev.preventDefault();
    undo();
  });
  setTool('pen');
  updateButtons();
}
