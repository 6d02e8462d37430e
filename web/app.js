// The dashboard: log-in, a router over the location hash, the live event
// stream, and the pages. Pages are modules under pages/; each mount()
// returns {title, refresh(), onEvent(ev), pollMs?}: the app calls
// refresh() when an event it says is relevant arrives (coalesced), when the
// stream (re)connects, and every pollMs while the tab is visible.

import { Api } from './api.js';
import { fill, h } from './dom.js';
import { EventReader } from './stream.js';
import { mountClients } from './pages/clients.js';
import { mountClient } from './pages/client.js';
import { mountImages } from './pages/images.js';
import { mountUnknown } from './pages/unknown.js';
import { mountLogin } from './pages/login.js';

const TOKEN_KEY = 'diskless.token';
/** Events within this long of each other cause one refresh. */
const COALESCE_MS = 250;

const main = document.getElementById('main');
const connection = document.getElementById('connection');
const logoutButton = document.getElementById('logout');
const nav = document.getElementById('nav');

let api = null;
let reader = null;
let page = null;
let pageSeq = 0;
let refreshTimer = null;
let refreshing = null;
let refreshAgain = false;
let pollTimer = null;
let loginMessage = null;
let afterLogin = null;

function setConnection(state, detail) {
  connection.dataset.state = state;
  const text = {
    connecting: 'Live updates: connecting…',
    live: 'Live updates: connected',
    retrying: `Live updates: disconnected (${detail?.message ?? 'no answer'}); retrying in ${Math.round((detail?.retryMs ?? 0) / 1000)} s`,
    stopped: 'Live updates: off',
  }[state] ?? state;
  fill(connection, h('span', { class: 'dot', 'aria-hidden': 'true' }), ' ', text);
}

function routeOf(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  switch (parts[0]) {
    case 'clients': return parts[1] ? { name: 'client', mac: parts[1] } : { name: 'clients' };
    case 'images': return { name: 'images', image: parts[1] ?? null };
    case 'unknown': return { name: 'unknown' };
    case 'login': return { name: 'login' };
    default: return { name: 'clients' };
  }
}

function markNav(name) {
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.page === name || (name === 'client' && a.dataset.page === 'clients')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

const ctx = {
  get api() { return api; },
  main,
  navigate(hash) {
    if (location.hash === hash) void show();
    else location.hash = hash;
  },
  login: async (token) => {
    const candidate = new Api(token, null);
    try {
      await candidate.get('/status');
    } catch (err) {
      return err.status === 401 ? 'The server refused this token.' : `The server could not be asked: ${err.message}`;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    startSession(token);
    const target = afterLogin && afterLogin !== '#/login' ? afterLogin : '#/clients';
    afterLogin = null;
    ctx.navigate(target);
    return null;
  },
};

function startSession(token) {
  // A late answer to an earlier session must not end this one.
  const refused = (message) => {
    if (api === session) endSession(`The server refused the token (${message}). Log in again.`);
  };
  const session = new Api(token, refused);
  api = session;
  reader?.stop();
  reader = new EventReader(session, {
    onState: setConnection,
    onUnauthorized: refused,
    onOpen: (reconnected) => {
      // Changes made while the stream was away were not sent: read everything again.
      if (reconnected) scheduleRefresh(0);
    },
    onEvent: (ev) => {
      if (ev.type === 'resync') scheduleRefresh(0);
      else if (page?.onEvent?.(ev)) scheduleRefresh(COALESCE_MS);
    },
  });
  reader.start();
  logoutButton.hidden = false;
  nav.hidden = false;
}

function endSession(message) {
  // The API and the stream may both report the same refused token.
  if (!api && !reader) return;
  sessionStorage.removeItem(TOKEN_KEY);
  api = null;
  reader?.stop();
  reader = null;
  logoutButton.hidden = true;
  nav.hidden = true;
  loginMessage = message;
  if (!location.hash.startsWith('#/login')) afterLogin = location.hash || null;
  ctx.navigate('#/login');
}

function scheduleRefresh(delay) {
  if (!page) return;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(runRefresh, delay);
}

async function runRefresh() {
  const p = page;
  if (!p || !api) return;
  refreshing = (async () => {
    try {
      await p.refresh();
      if (p !== page) return;
      clearNotice();
      // For tests and the curious: how many times this page has read the server.
      main.dataset.refreshed = String(Number(main.dataset.refreshed ?? 0) + 1);
    } catch (err) {
      if (err?.status !== 401 && p === page) showNotice(`Could not refresh: ${err.message}`);
    }
  })();
  await refreshing;
  refreshing = null;
  if (refreshAgain) {
    refreshAgain = false;
    scheduleRefresh(COALESCE_MS);
  }
}

function showNotice(text) {
  const el = document.getElementById('notice');
  fill(el, text);
  el.hidden = false;
}

function clearNotice() {
  const el = document.getElementById('notice');
  el.hidden = true;
  el.replaceChildren();
}

async function show() {
  const seq = ++pageSeq;
  clearInterval(pollTimer);
  clearTimeout(refreshTimer);
  page = null;
  clearNotice();
  let route = routeOf(location.hash);
  if (!api && route.name !== 'login') {
    afterLogin = location.hash || null;
    location.hash = '#/login';
    return;
  }
  if (api && route.name === 'login') route = { name: 'clients' };
  markNav(route.name);
  main.replaceChildren();
  let p;
  switch (route.name) {
    case 'login': p = mountLogin(ctx, { message: loginMessage }); loginMessage = null; break;
    case 'clients': p = mountClients(ctx); break;
    case 'client': p = mountClient(ctx, route.mac); break;
    case 'images': p = mountImages(ctx, route.image); break;
    case 'unknown': p = mountUnknown(ctx); break;
  }
  document.title = `${p.title} · diskless`;
  main.dataset.page = route.name;
  main.dataset.refreshed = '0';
  page = p;
  if (p.refresh) await runRefresh();
  if (seq !== pageSeq) return;
  // Moving focus to the heading tells screen readers the page changed.
  main.querySelector('h1')?.focus({ preventScroll: true });
  if (p.pollMs) {
    pollTimer = setInterval(() => {
      if (document.visibilityState === 'visible' && !refreshing) scheduleRefresh(0);
    }, p.pollMs);
  }
}

logoutButton.addEventListener('click', () => endSession('You logged out.'));
window.addEventListener('hashchange', () => void show());

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) startSession(saved);
else setConnection('stopped');
void show();
