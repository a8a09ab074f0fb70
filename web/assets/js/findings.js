// The findings list: filters, sort, server-side paging, bulk archive, and
// live updates by polling the current page.
import { h, mount, vis, time, sevBadge, toast } from './dom.js';
import * as api from './api.js';
import { types } from './catalogue.js';
import { where, short } from './model.js';

const PAGE = 50;
const POLL_MS = 3000;
const FILTERS = ['severity', 'type', 'tactic', 'cluster', 'namespace', 'image', 'archived'];
const COLUMNS = [
  ['severity', 'Severity'], ['type', 'Finding'], [null, 'Resource'], ['count', 'Count'],
  ['eventFirstSeen', 'First seen'], ['eventLastSeen', 'Last seen'],
];

// Most recently changed first: a new finding or a repeat of an old one
// (count, last seen) comes to the top. The store indexes it with the
// archived flag, so the default view stays fast at any size.
const DEFAULT_SORT = 'updatedAt';
const SORTS = [['updatedAt', 'Last updated'], ['eventLastSeen', 'Last seen'], ['eventFirstSeen', 'First seen'],
  ['severity', 'Severity'], ['count', 'Count'], ['type', 'Type'], ['createdAt', 'Created']];

let st = null; // the view's state while it is shown

export function stopFindings() {
  if (st) clearTimeout(st.timer);
  st = null;
  const live = document.getElementById('live');
  if (live) live.hidden = true;
}

function stateFrom(query) {
  const s = { q: {}, sort: query.get('sort') || DEFAULT_SORT, order: query.get('order') || 'desc',
    // Keyset paging: cursors[i] starts page i (the store's cursors stay
    // fast at any depth, where offsets slow down).
    cursors: [''], page: 0, selected: new Set(), seen: new Map(), timer: 0 };
  for (const f of FILTERS) s.q[f] = query.get(f) ?? (f === 'archived' ? 'false' : '');
  return s;
}

function syncHash() {
  const p = new URLSearchParams();
  for (const f of FILTERS) if (st.q[f] !== '' && !(f === 'archived' && st.q[f] === 'false')) p.set(f, st.q[f]);
  if (st.sort !== DEFAULT_SORT) p.set('sort', st.sort);
  if (st.order !== 'desc') p.set('order', st.order);
  const qs = p.toString();
  history.replaceState(null, '', '#/findings' + (qs ? '?' + qs : ''));
}

const filtered = () => FILTERS.some((f) => st.q[f] !== '' && !(f === 'archived' && st.q[f] === 'false'));

// prefetch starts loading the page a route will show, before the session
// check returns; showFindings takes it over when the query matches.
let early = null;
export function prefetch(query) {
  const s = stateFrom(query);
  // A failed prefetch (not logged in yet) resolves to null: refetched later.
  early = { key: JSON.stringify([s.q, s.sort, s.order]), page: fetchPage(s).catch(() => null) };
}

export async function showFindings(query) {
  stopFindings();
  st = stateFrom(query);
  // The first page and the catalogue load side by side.
  const key = JSON.stringify([st.q, st.sort, st.order]);
  const first = early && early.key === key ? early.page : fetchPage(st);
  early = null;
  const cat = await types();
  const tactics = [...new Set(cat.list.map((k) => k.tactic).filter(Boolean))].sort();

  const onFilter = (name) => (ev) => {
    st.q[name] = ev.target.value.trim();
    st.cursors = [''];
    st.page = 0;
    st.selected.clear();
    syncHash();
    refresh(true);
  };
  let typing;
  const debounced = (name) => (ev) => { clearTimeout(typing); typing = setTimeout(() => onFilter(name)(ev), 300); };
  const select = (name, label, opts) => h('label', null, label,
    h('select', { name, id: 'f-' + name, onchange: onFilter(name) },
      opts.map(([v, l]) => h('option', { value: v, selected: st.q[name] === v }, l))));
  const text = (name, label, extra) => h('label', null, label,
    h('input', { name, id: 'f-' + name, type: 'search', value: st.q[name], oninput: debounced(name), ...extra }));

  const bar = h('form', { class: 'filters', id: 'filters', onsubmit: (e) => e.preventDefault() },
    select('severity', 'Severity', [['', 'Any'], ['Critical', 'Critical'], ['High', 'High'], ['Medium', 'Medium'], ['Low', 'Low']]),
    text('type', 'Type', { list: 'types', placeholder: 'any type', size: 30 }),
    h('datalist', { id: 'types' }, cat.list.map((k) => h('option', { value: k.type }))),
    select('tactic', 'Tactic', [['', 'Any'], ...tactics.map((t) => [t, t])]),
    text('cluster', 'Cluster', { placeholder: 'any' }),
    text('namespace', 'Namespace', { placeholder: 'any' }),
    text('image', 'Image', { placeholder: 'any' }),
    select('archived', 'Status', [['false', 'Active'], ['true', 'Archived'], ['', 'All']]));

  const actions = h('div', { class: 'actions' },
    h('label', { class: 'sortby' }, 'Sort ',
      h('select', { id: 'sort', onchange: (e) => sortBy(e.target.value, true) },
        SORTS.map(([v, l]) => h('option', { value: v, selected: st.sort === v }, l))),
      h('button', { type: 'button', id: 'order', class: 'ghost', title: 'reverse the order',
        onclick: () => sortBy(st.sort) }, st.order === 'asc' ? '▲ ascending' : '▼ descending')),
    h('button', { type: 'button', id: 'archive-selected', onclick: () => bulk(true) }, 'Archive selected'),
    h('button', { type: 'button', id: 'unarchive-selected', onclick: () => bulk(false) }, 'Unarchive selected'),
    h('span', { class: 'spacer' }),
    h('button', { type: 'button', id: 'samples', class: 'ghost', onclick: generateSamples }, 'Generate sample findings'));

  const thead = h('thead', null, h('tr', null,
    h('th', { class: 'check' }, h('input', { type: 'checkbox', id: 'select-all', 'aria-label': 'select all on this page',
      onchange: (e) => selectAll(e.target.checked) })),
    COLUMNS.map(([key, label]) => key
      ? h('th', { class: 'sortable', dataset: { sort: key }, onclick: () => sortBy(key),
        'aria-sort': st.sort === key ? (st.order === 'asc' ? 'ascending' : 'descending') : 'none' },
      label, st.sort === key ? (st.order === 'asc' ? ' ▲' : ' ▼') : '')
      : h('th', null, label))));
  st.tbody = h('tbody', { id: 'findings-body' });
  st.pager = h('div', { class: 'pager', id: 'pager' });
  st.empty = h('div', { id: 'empty' });
  mount(h('section', { class: 'findings' }, h('h1', null, 'Findings'), bar, actions,
    h('table', { class: 'list', id: 'findings' }, thead, st.tbody), st.empty, st.pager));
  document.getElementById('live').hidden = false;
  await refresh(true, first);
}

function sortBy(key, fresh) {
  if (st.sort === key && !fresh) st.order = st.order === 'asc' ? 'desc' : 'asc';
  else { st.sort = key; st.order = key === 'type' ? 'asc' : 'desc'; }
  syncHash();
  showFindings(new URLSearchParams(location.hash.split('?')[1] || ''));
}

function selectAll(on) {
  for (const cb of st.tbody.querySelectorAll('input[type=checkbox]')) {
    cb.checked = on;
    if (on) st.selected.add(cb.value); else st.selected.delete(cb.value);
  }
}

async function bulk(archive) {
  const ids = [...st.selected];
  if (!ids.length) { toast('Select findings first.', true); return; }
  try {
    await (archive ? api.archive(ids) : api.unarchive(ids));
    toast((archive ? 'Archived ' : 'Unarchived ') + ids.length + (ids.length === 1 ? ' finding' : ' findings'));
    st.selected.clear();
    st.sig = '';
    refresh(true);
  } catch (e) { toast(e.message, true); }
}

async function generateSamples() {
  try {
    const r = await api.samples();
    const n = (r && r.created) || '';
    toast('Sample findings generated' + (n ? ': ' + n : '') + '. Their titles start with [SAMPLE].');
    if (st) refresh(true);
  } catch (e) { toast(e.message, true); }
}

// refresh loads the current page; a poll calls it again every POLL_MS
// while the tab is visible.
const fetchPage = (s) => api.findings({ ...s.q, sort: s.sort, order: s.order, limit: PAGE, cursor: s.cursors[s.page] });

async function refresh(now, prefetched) {
  if (!st) return;
  const me = st;
  clearTimeout(me.timer);
  if (now || document.visibilityState === 'visible') {
    try {
      const t0 = performance.now();
      const page = (await prefetched) || (await fetchPage(me));
      if (st !== me) return;
      render(page);
      const live = document.getElementById('live');
      live.textContent = 'Live · updated ' + new Date().toLocaleTimeString() + ' · ' + Math.round(performance.now() - t0) + ' ms';
      live.classList.remove('stale');
    } catch (e) {
      if (st !== me) return;
      const live = document.getElementById('live');
      live.textContent = 'Live updates failing: ' + e.message;
      live.classList.add('stale');
    }
  }
  if (st === me) me.timer = setTimeout(() => refresh(false), POLL_MS);
}

function render(page) {
  // Unchanged data leaves the DOM alone, so a poll never swaps a row out
  // from under the pointer.
  const sig = JSON.stringify([page.total, page.next, st.page, page.items.map((f) => [f.id, f.updatedAt, f.service && f.service.count, f.service && f.service.archived])]);
  if (sig === st.sig) return;
  st.sig = sig;
  const first = st.seen.size === 0;
  const rows = page.items.map((f) => row(f, first));
  st.tbody.replaceChildren(...rows);
  // User Timing mark: time from navigation to the first page on screen.
  if (!performance.getEntriesByName('mamori:first-page').length) performance.mark('mamori:first-page');
  st.empty.replaceChildren();
  if (!page.items.length) st.empty.append(emptyState());
  const start = st.page * PAGE;
  const from = page.items.length ? start + 1 : 0;
  const to = start + page.items.length;
  const total = page.total ?? (page.next ? to + '+' : to);
  st.cursors[st.page + 1] = page.next;
  st.pager.replaceChildren(
    h('button', { type: 'button', id: 'prev', disabled: st.page === 0, onclick: () => go(-1) }, '‹ Previous'),
    h('span', { id: 'range' }, `${from}–${to} of ${typeof total === 'number' ? total.toLocaleString() : total}`),
    h('button', { type: 'button', id: 'next', disabled: !page.next, onclick: () => go(1) }, 'Next ›'));
}

function go(delta) {
  const p = st.page + delta;
  if (p < 0 || (delta > 0 && !st.cursors[p])) return;
  st.page = p;
  st.selected.clear();
  refresh(true);
}

function row(f, first) {
  const w = where(f);
  const s = f.service || {};
  const prev = st.seen.get(f.id);
  const fresh = prev !== undefined && prev !== f.updatedAt;
  const isNew = !first && prev === undefined;
  st.seen.set(f.id, f.updatedAt);
  const open = () => { location.hash = '#/findings/' + encodeURIComponent(f.id); };
  const cb = h('input', { type: 'checkbox', value: f.id, checked: st.selected.has(f.id), 'aria-label': 'select finding',
    onchange: (e) => { if (e.target.checked) st.selected.add(f.id); else st.selected.delete(f.id); } });
  const place = [];
  if (w.cluster) place.push(h('span', { class: 'tag', title: 'cluster' }, vis(w.cluster)));
  if (w.namespace || w.pod) place.push(h('span', { title: 'namespace / pod' }, vis(w.namespace + ' / ' + w.pod)));
  if (w.containerId) place.push(h('span', { title: 'container ' + w.containerId }, vis(w.container || short(w.containerId))));
  if (w.task) place.push(h('span', { title: 'ECS task' }, vis(w.task)));
  const tr = h('tr', { class: [fresh || isNew ? 'fresh' : '', s.archived ? 'archived' : ''].join(' ').trim(), dataset: { id: f.id },
    tabindex: '0', onkeydown: (e) => { if (e.key === 'Enter') open(); } },
  h('td', { class: 'check', onclick: (e) => e.stopPropagation() }, cb),
  h('td', null, sevBadge(f.severity, f.severityLabel)),
  h('td', { class: 'ftype' },
    h('a', { href: '#/findings/' + encodeURIComponent(f.id), class: 'type' }, vis(f.type)),
    h('div', { class: 'title' }, vis(f.title)),
    s.archived ? h('span', { class: 'tag' }, 'archived') : null,
    s.additionalInfo && s.additionalInfo.sample ? h('span', { class: 'tag' }, 'sample') : null),
  h('td', { class: 'res' },
    h('div', null, place.length ? place : h('span', { class: 'muted' }, w.type === 'Instance' ? 'host' : vis(w.type))),
    w.image ? h('div', { class: 'muted', title: 'image' }, vis(w.image)) : null,
    h('div', { class: 'muted', title: 'node' }, vis(w.node))),
  h('td', { class: 'num' }, (s.count ?? 1).toLocaleString()),
  h('td', null, time(s.eventFirstSeen)),
  h('td', null, time(s.eventLastSeen)));
  tr.addEventListener('click', (e) => { if (!e.target.closest('a,input')) open(); });
  return tr;
}

function emptyState() {
  if (filtered()) return h('p', { class: 'empty pad' }, 'No findings match these filters.');
  return h('div', { class: 'empty card', id: 'empty-state' },
    h('h2', null, 'No findings yet — good news, or nothing has happened yet'),
    h('p', null, 'To see a first finding, run the demo on the host where mamori run is running:'),
    h('pre', null, 'sudo mamori demo'),
    h('p', null, 'It starts a throwaway container and performs harmless but real attack behaviours in it (a command-and-control domain lookup, a dropped binary, a mount attempt…). Their findings appear here within seconds.'),
    h('p', null, 'Or generate one sample finding of every type to try the console, exports and suppression rules:'),
    h('button', { type: 'button', class: 'primary', id: 'samples-empty', onclick: generateSamples }, 'Generate sample findings'));
}
