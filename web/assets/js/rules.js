// Suppression rules and saved filters: what they match, and deleting them
// (undoing "suppress findings like this").
import { h, mount, vis, time, toast } from './dom.js';
import * as api from './api.js';

export async function showRules() {
  const rules = await api.suppressionRules();
  const body = h('tbody', { id: 'rules-body' }, rules.map((r) => h('tr', { dataset: { id: r.id } },
    h('td', null, h('div', { class: 'rname' }, vis(r.name)), r.description ? h('div', { class: 'muted small' }, vis(r.description)) : null),
    h('td', null, h('span', { class: 'tag' }, r.action === 'ARCHIVE' ? 'suppress (archive)' : 'saved filter')),
    h('td', null, h('ul', { class: 'crits' }, (r.criteria || []).map((c) => h('li', { class: 'mono small' },
      vis(c.field), ' ', h('b', null, vis(c.op)), ' ', vis(typeof c.value === 'string' ? c.value : JSON.stringify(c.value)))))),
    h('td', null, time(r.createdAt)),
    h('td', null, h('button', { type: 'button', class: 'delete', onclick: (e) => remove(r, e.target) }, 'Delete')))));
  mount(h('section', { class: 'rules' },
    h('h1', null, 'Suppression rules'),
    h('p', { class: 'muted' }, 'Findings matching every criterion of a suppression rule are stored archived and never exported. Create one from a finding with "Suppress findings like this". Deleting a rule leaves the findings it archived archived.'),
    rules.length
      ? h('table', { class: 'list', id: 'rules' },
        h('thead', null, h('tr', null, ['Rule', 'Action', 'Criteria', 'Created', ''].map((t) => h('th', null, t)))), body)
      : h('p', { class: 'empty pad', id: 'rules-empty' }, 'No rules yet.')));
}

// remove asks for a second click before deleting.
async function remove(r, btn) {
  if (!btn.dataset.armed) {
    btn.dataset.armed = '1';
    btn.textContent = 'Click again to delete';
    setTimeout(() => { delete btn.dataset.armed; btn.textContent = 'Delete'; }, 4000);
    return;
  }
  try {
    await api.deleteRule(r.id);
    toast('Deleted rule "' + vis(r.name) + '".');
    await showRules();
  } catch (e) { toast(e.message, true); }
}
