// What the page knows, shared by its modules.

export const FINAL = new Set(['done', 'failed', 'cancelled']);
export const GRID_PARAMS = ['prompt', 'seed'];            // grid axes every model has; its options follow
export const HISTORY_PAGE = 24;
export const MAX_STYLES = 4;

export const state = {
  models: [],
  model: null,
  mode: 'txt2img',
  jobs: new Map(),           // id -> job this page started
  shown: null,               // the job whose progress the bar shows
  init: null,                // {id, width, height}: the uploaded init image (also the picture a projection finds)
  latent: null,              // {id, model, hash}: the projection (a project job's picture) painting starts from
  content: null,             // style transfer: {id, upload, url}: an upload, or a picture of the history
  styles: [],                // style transfer: [{id, url, weight}]: uploads
  styleInfo: {methods: ['adain', 'gatys'], unavailable: {}},
  mask: {painted: false, upload: null, drawing: false, last: null},
  history: {offset: 0, total: 0, count: 0},
  params: new Map(),         // image id -> its parameters (cache)
  ratings: new Map(),        // image id -> the rating given here (newer than a history page still on its way)
};
