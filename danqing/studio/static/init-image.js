// The init image of img2img and inpainting, and the mask painted over it with the brush.
import {api} from './api.js';
import {$, clearError, num, showError} from './dom.js';
import {state} from './state.js';

// Upload a picture the user chose: {id, width, height}, or null after showing why not.
export async function uploadPicture(file, what) {
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

export async function setInit(file) {
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

export function removeInit() {
  state.init = null;
  clearMask();
  $('#canvas-wrap').hidden = true;
  $('#init-hint').hidden = false;
  $('#init-file').value = '';
}

const maskData = document.createElement('canvas');   // the mask itself: white where to repaint, black elsewhere

export function clearMask() {
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

export function paint(ev) {
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

export async function uploadMask() {
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
