// One finding: what it means, where, which process and its lineage, the
// type's context, threat-intel evidence and the raw JSON; archive,
// unarchive and "suppress findings like this".
import { h, mount, vis, argv, kv, time, sevBadge, toast, get } from './dom.js';
import * as api from './api.js';
import { types, guide } from './catalogue.js';
import { where, suppressionCriteria } from './model.js';

export async function showDetail(id) {
  const [f, cat] = await Promise.all([api.finding(id), types()]);
  const s = f.service || {};
  const w = where(f);
  const g = guide(cat, f);
  const kind = cat.byType.get(f.type);
  const det = s.detector || {};

  const archiveBtn = h('button', { type: 'button', id: 'archive', onclick: () => setArchived(f, !s.archived) },
    s.archived ? 'Unarchive' : 'Archive');
  const head = h('div', { class: 'detail-head' },
    h('a', { href: '#/findings', class: 'back' }, '‹ Findings'),
    h('h1', { id: 'finding-title' }, sevBadge(f.severity, f.severityLabel), ' ', vis(f.title)),
    h('div', { class: 'type', id: 'finding-type' }, vis(f.type)),
    h('div', { class: 'meta' },
      h('span', null, 'Count ', h('b', { id: 'finding-count' }, String(s.count ?? 1))),
      h('span', null, 'First seen ', time(s.eventFirstSeen)),
      h('span', null, 'Last seen ', time(s.eventLastSeen)),
      s.archived ? h('span', { class: 'tag', id: 'archived-tag' }, f.suppressedBy ? 'archived by suppression rule ' + vis(f.suppressedBy) : 'archived') : null,
      get(s, 'additionalInfo.sample') ? h('span', { class: 'tag' }, 'sample') : null),
    h('div', { class: 'actions' }, archiveBtn,
      h('button', { type: 'button', id: 'suppress', onclick: () => suppressDialog(f) }, 'Suppress findings like this')));

  const proc = get(s, 'runtimeDetails.process');
  const ctx = get(s, 'runtimeDetails.context') || {};
  const intel = get(s, 'evidence.threatIntelligenceDetails') || [];

  mount(h('article', { class: 'detail', id: 'detail', dataset: { id: f.id } },
    head,
    section('What this means', 'guide',
      h('p', null, g.means),
      h('h3', null, 'What to do'),
      h('ol', null, (g.do || []).map((t) => h('li', null, t))),
      f.description && f.description !== g.means ? h('p', { class: 'muted' }, vis(f.description)) : null),
    section('Resource', 'resource', kv([
      ['Resource type', w.type], ['Cluster', w.cluster], ['Namespace', w.namespace], ['Pod', w.pod],
      ['Pod UID', get(f, 'resource.kubernetesDetails.kubernetesWorkloadDetails.uid')],
      ['ECS cluster', get(f, 'resource.ecsClusterDetails.name')], ['ECS task', w.task],
      ['Task definition', get(f, 'resource.ecsClusterDetails.taskDetails.definitionArn')],
      ['Container', w.container], ['Container ID', w.containerId], ['Runtime', w.runtime],
      ['Image', w.image], ['Privileged', w.containerId ? (w.privileged ? 'yes' : 'no') : ''],
      ['Node', w.node], ['Node ID', w.nodeId],
      ['Agent', [get(s, 'additionalInfo.agentDetails.agentId'), get(s, 'additionalInfo.agentDetails.agentVersion')].filter(Boolean).join(' · ')],
    ])),
    proc ? section('Process', 'process', kv([
      ['Name', proc.name], ['Executable', proc.executablePath], ['SHA-256', proc.executableSha256],
      ['Command line', long(argv(proc.args), 'mono')], ['User', userOf(proc)], ['PID', pid(proc)],
      ['Working directory', proc.pwd], ['Started', time(proc.startTime)], ['UUID', proc.uuid],
    ])) : null,
    proc ? section('Process lineage', 'lineage', lineage(proc)) : null,
    section('Context', 'context', contextTable(ctx, kind)),
    intel.length ? section('Threat intelligence', 'evidence', h('table', { class: 'list' },
      h('thead', null, h('tr', null, h('th', null, 'List'), h('th', null, 'Threat'), h('th', null, 'Indicator'))),
      h('tbody', null, intel.map((t) => h('tr', null, h('td', null, vis(t.threatListName)),
        h('td', null, vis((t.threatNames || []).join(', '))), h('td', { class: 'mono' }, vis(t.indicator))))))) : null,
    section('Detector', 'detector', kv([
      ['Tactic', det.tactic], ['Technique', det.technique], ['Detector', det.name], ['Rule', det.rule || ctx.ruleId],
      ['Finding ID', f.id], ['Created', time(f.createdAt)], ['Updated', time(f.updatedAt)],
    ])),
    h('details', { class: 'card', id: 'raw' }, h('summary', null, 'Raw JSON'),
      h('pre', { class: 'json' }, JSON.stringify(f, null, 2)))));
}

// long shows a long text's start, with the rest one click away.
function long(text, cls) {
  if (text.length <= 240) return h('div', { class: cls }, text);
  return h('details', { class: cls + ' long' },
    h('summary', null, text.slice(0, 200) + ` … (${(text.length - 200).toLocaleString()} more characters)`), text);
}

function section(title, id, ...body) {
  return h('section', { class: 'card', id }, h('h2', null, title), ...body);
}

function userOf(p) {
  const name = p.user || '';
  const ids = p.euid !== undefined && p.euid !== p.userId ? `uid ${p.userId}, euid ${p.euid}` : `uid ${p.userId ?? '?'}`;
  return name ? `${name} (${ids})` : ids;
}

function pid(p) {
  return p.namespacePid && p.namespacePid !== p.pid ? `${p.pid} (${p.namespacePid} in its namespace)` : String(p.pid ?? '');
}

// exeLabel says why a path is missing: "/" is what the kernel names a file
// that is itself the root of a detached mount (runc runs a sealed copy of
// itself that way); none means /proc/PID/exe could not be read.
function exeLabel(exe) {
  if (!exe) return '(executable path unreadable)';
  if (exe === '/') return '(executable on a detached mount, path unknown)';
  return exe;
}

// lineage renders the ancestors, oldest first, as nested lists ending at
// the acting process.
function lineage(proc) {
  const chain = [...(proc.lineage || [])].reverse();
  chain.push({ ...proc, acting: true });
  const root = h('ul', { class: 'tree', id: 'lineage-tree' });
  let parent = root;
  for (const p of chain) {
    const li = h('li', { class: p.acting ? 'acting' : '' },
      h('div', { class: 'node' },
        h('span', { class: 'pname' }, vis(p.name || '?')),
        h('span', { class: 'mono exe' }, vis(exeLabel(p.executablePath))),
        p.acting ? h('span', { class: 'tag' }, 'acting process') : null),
      long(argv(p.args), 'mono argv'),
      h('div', { class: 'muted small' }, `pid ${pid(p)} · ${userOf(p)}`,
        p.startTime && !p.startTime.startsWith('0001') ? [' · started ', time(p.startTime)] : null));
    parent.append(li);
    const ul = h('ul');
    li.append(ul);
    parent = ul;
  }
  return h('div', null, root,
    !proc.lineage || !proc.lineage.length ? h('p', { class: 'muted' }, 'No ancestors were known when this finding was raised.') : null);
}

function contextTable(ctx, kind) {
  const keys = Object.keys(ctx);
  if (!keys.length) return h('p', { class: 'muted' }, 'This finding type carries no context.');
  const order = kind && kind.context ? kind.context : [];
  keys.sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99) || a.localeCompare(b));
  return kv(keys.map((k) => [k, value(ctx[k])]));
}

function value(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return h('pre', { class: 'json inline' }, JSON.stringify(v, null, 2));
  if (typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v)) return time(v);
  return vis(v);
}

async function setArchived(f, on) {
  try {
    await (on ? api.archive([f.id]) : api.unarchive([f.id]));
    toast(on ? 'Archived.' : 'Unarchived.');
    await showDetail(f.id);
  } catch (e) { toast(e.message, true); }
}

// suppressDialog proposes a suppression rule prefilled from f.
function suppressDialog(f) {
  const crit = suppressionCriteria(f);
  const shortType = f.type.split('/').pop();
  const name = h('input', { id: 'rule-name', required: true, maxlength: 200,
    value: vis(`Suppress ${shortType}` + (crit[1] ? ' for ' + crit[1].value : '')) });
  const desc = h('input', { id: 'rule-description', maxlength: 500, value: 'Created from finding ' + f.id });
  const action = h('select', { id: 'rule-action' },
    h('option', { value: 'ARCHIVE', selected: true }, 'Archive matching findings (they are kept, never exported)'),
    h('option', { value: 'NOOP' }, 'Keep active (a saved filter only)'));
  const alsoArchive = h('input', { type: 'checkbox', id: 'rule-apply-existing', checked: true });
  const boxes = crit.map((c, i) => h('label', { class: 'crit' },
    h('input', { type: 'checkbox', checked: c.on, dataset: { i: String(i) } }),
    h('span', { class: 'mono' }, c.field), ' ', h('b', null, c.op), ' ', h('span', { class: 'mono' }, vis(c.value))));
  const err = h('p', { class: 'error' });
  const dlg = h('dialog', { id: 'suppress-dialog', class: 'dialog' });
  const form = h('form', { method: 'dialog' },
    h('h2', null, 'Suppress findings like this'),
    h('p', { class: 'muted' }, 'Future findings matching every checked criterion are stored archived and never exported.'),
    h('label', null, 'Name', name), h('label', null, 'Description', desc),
    h('fieldset', null, h('legend', null, 'Criteria'), boxes),
    h('label', null, 'Action', action),
    h('label', { class: 'crit' }, alsoArchive, ' Also archive the stored findings it matches (this one included)'),
    err,
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: () => { dlg.close(); dlg.remove(); } }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary', id: 'rule-create' }, 'Create rule')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const chosen = boxes.map((b, i) => [b.querySelector('input').checked, crit[i]]).filter(([on]) => on).map(([, c]) => c);
    if (!chosen.length) { err.textContent = 'Check at least one criterion.'; return; }
    const rule = { name: name.value.trim(), description: desc.value.trim(), action: action.value,
      criteria: chosen.map(({ field, op, value }) => ({ field, op, value })) };
    try {
      const res = await api.createSuppression(rule, alsoArchive.checked && rule.action === 'ARCHIVE');
      dlg.close();
      dlg.remove();
      toast('Suppression rule "' + rule.name + '" created' + (res && res.archived ? `; it archived ${res.archived} stored finding(s).` : '.'));
      await showDetail(f.id);
    } catch (e) { err.textContent = e.message; }
  });
  dlg.append(form);
  document.body.append(dlg);
  dlg.showModal();
}
