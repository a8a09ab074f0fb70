// The console's entry point: session, routing (#/findings, #/findings/ID,
// #/coverage) and the login view.
import { h, mount, toast } from './dom.js';
import * as api from './api.js';
import { showFindings, stopFindings, prefetch } from './findings.js';
import { showDetail } from './detail.js';
import { showCoverage, stopCoverage } from './coverage.js';
import { types } from './catalogue.js';
import { showRules } from './rules.js';

let loggedIn = false;

// watchHealth shows, on every view, what keeps the server from taking or
// storing agent messages (its disk full, its database down): findings are
// then late, not lost, and the banner says so.
const healthEvery = 5000;
async function checkHealth() {
  const banner = document.getElementById('server-health');
  try {
    const hl = loggedIn ? await api.health() : null;
    const problems = (loggedIn && hl && hl.status === 'degraded' && hl.problems) || [];
    banner.textContent = problems.length
      ? 'The server cannot take or store agent messages now — findings are late, not lost: ' + problems.join('; ')
      : '';
    banner.hidden = problems.length === 0;
  } catch {
    // unreachable or logged out: the views say so
  }
}
async function watchHealth() {
  await checkHealth();
  setTimeout(watchHealth, healthEvery);
}
function clearHealth() {
  const banner = document.getElementById('server-health');
  banner.textContent = '';
  banner.hidden = true;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || '') };
}

function setNav(view) {
  document.getElementById('nav').hidden = !loggedIn;
  document.getElementById('logout').hidden = !loggedIn;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('on', a.dataset.view === view);
}

async function route() {
  for (const d of document.querySelectorAll('dialog')) d.remove();
  stopFindings();
  stopCoverage();
  if (!loggedIn) {
    setNav('');
    showLogin();
    return;
  }
  const { parts, query } = parseHash();
  try {
    if (parts[0] === 'coverage') {
      setNav('coverage');
      await showCoverage();
    } else if (parts[0] === 'rules') {
      setNav('rules');
      await showRules();
    } else if (parts[0] === 'findings' && parts[1]) {
      setNav('findings');
      await showDetail(parts[1]);
    } else {
      setNav('findings');
      await showFindings(query);
    }
  } catch (e) {
    if (e.status !== 401) mount(h('p', { class: 'error pad' }, 'Could not load this page: ' + e.message));
  }
}

function showLogin(message) {
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true,
    placeholder: 'API token', 'aria-label': 'API token' });
  const err = h('p', { class: 'error', id: 'login-error' }, message || '');
  const form = h('form', { class: 'login', id: 'login-form', method: 'post', action: '/console/login' },
    h('h1', null, 'Log in to mamori'),
    h('p', { class: 'muted' }, 'Paste an API token. A local mamori run or mamori server keeps its admin token in its data directory, readable by root only:'),
    h('pre', null, 'sudo cat DATA_DIR/api/admin.token'),
    h('p', { class: 'muted small' }, 'DATA_DIR is the --data-dir it was started with, /var/lib/mamori by default; it prints the exact path when it starts.'),
    h('p', { class: 'muted small' }, 'A token with read scope can look; archiving and suppression rules need write scope.'),
    input,
    h('button', { type: 'submit', class: 'primary' }, 'Log in'),
    err);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    try {
      await api.login(input.value);
      loggedIn = true;
      input.value = '';
      checkHealth();
      if (!location.hash || location.hash === '#/login') location.hash = '#/findings';
      else route();
    } catch (e) {
      err.textContent = e.message;
    }
  });
  mount(form);
  input.focus();
}

async function start() {
  api.setUnauthorizedHandler(() => {
    if (!loggedIn) return;
    loggedIn = false;
    clearHealth();
    stopFindings();
    stopCoverage();
    setNav('');
    showLogin('Your session ended: log in again.');
  });
  document.getElementById('logout').addEventListener('click', async () => {
    try { await api.logout(); } catch (e) { toast(e.message, true); }
    loggedIn = false;
    clearHealth();
    route();
  });
  window.addEventListener('hashchange', route);
  // While the session is checked, start what the first view needs: the
  // catalogue (public) and, for the list, its first page (a 401 there is
  // harmless: the login view follows).
  types().catch(() => {});
  const { parts, query } = parseHash();
  if (!parts[0] || (parts[0] === 'findings' && !parts[1])) prefetch(query);
  try {
    loggedIn = (await api.session()).loggedIn;
  } catch {
    loggedIn = false;
  }
  route();
  watchHealth();
}

start();
