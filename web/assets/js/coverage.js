// Coverage: every cluster and node, Healthy or Unhealthy, and for an
// Unhealthy one the reason in plain words.
import { h, mount, vis, ago } from './dom.js';
import * as api from './api.js';

const POLL_MS = 5000;
let timer = 0;
let active = false;

export function stopCoverage() {
  active = false;
  clearTimeout(timer);
}

// Plain-words openings for issue types; the extra information follows.
const ISSUES = {
  AGENT_NOT_REPORTING: 'The agent has not reported',
  AGENTNOTREPORTING: 'The agent has not reported',
  HOOK_ATTACH_FAILED: 'A kernel hook failed to attach',
  HOOKATTACHFAILED: 'A kernel hook failed to attach',
  KERNEL_NO_BTF: 'The kernel lacks BTF type information, so the sensor cannot load',
  EVENTS_DROPPED: 'Events were dropped',
  EVENTSDROPPED: 'Events were dropped',
  RUNTIME_UNREACHABLE: 'The container runtime is unreachable',
  CONTAINERRUNTIMEUNREACHABLE: 'The container runtime is unreachable',
  EXCLUDED_BY_LABEL: 'Excluded from monitoring by label',
  EXCLUDEDBYLABEL: 'Excluded from monitoring by label',
  AGENT_EXITED: 'The agent exited',
  NO_HEARTBEAT: 'No heartbeat has arrived yet',
};

// plainIssue turns "Type:Extra information" into a sentence.
export function plainIssue(issue) {
  if (!issue) return '';
  const s = String(issue);
  const i = s.indexOf(':');
  const typ = i < 0 ? s : s.slice(0, i);
  const extra = i < 0 ? '' : s.slice(i + 1).trim();
  const key = typ.trim().toUpperCase().replace(/[\s-]+/g, '_');
  let opening = ISSUES[key] || ISSUES[key.replace(/_/g, '')];
  if (!opening) {
    const words = typ.replace(/([a-z])([A-Z])/g, '$1 $2').replace(/[_-]+/g, ' ').trim().toLowerCase();
    opening = words.charAt(0).toUpperCase() + words.slice(1);
  }
  return extra ? `${opening}: ${extra}` : opening;
}

const healthy = (n) => String(n.status || n.coverageStatus || '').toUpperCase() === 'HEALTHY';
const nodeName = (n) => n.hostname || n.nodeName || n.name || n.nodeId || n.id || '';
const clusterOf = (n) => n.cluster || n.clusterName || '';

function hooksOf(n) {
  const list = n.hooks || n.attachedHooks || [];
  return list.map((x) => (typeof x === 'string' ? { hook: x, attached: true } : {
    hook: x.hook || x.name, attached: !!x.attached, optional: !!x.optional, error: x.error || '' }));
}

function drops(n) {
  const d = n.drops || n.dropCounters || n.dropped || {};
  if (typeof d === 'number') return [['dropped', d]];
  return Object.entries(d).filter(([, v]) => typeof v === 'number');
}

export async function showCoverage() {
  stopCoverage();
  active = true;
  const stats = h('div', { class: 'clusters', id: 'cluster-stats' });
  const body = h('tbody', { id: 'coverage-body' });
  mount(h('section', { class: 'coverage' },
    h('h1', null, 'Coverage'),
    h('p', { class: 'muted' }, 'A node is Healthy when its agent reports, every required hook is attached and no events are being lost. Otherwise the reason is shown.'),
    stats,
    h('table', { class: 'list', id: 'coverage' },
      h('thead', null, h('tr', null, ['Status', 'Node', 'Cluster', 'Issue', 'Agent', 'Kernel', 'Hooks', 'Drops', 'Last heartbeat']
        .map((t) => h('th', null, t)))),
      body)));
  const load = async () => {
    if (!active) return;
    try {
      const [nodes, st] = await Promise.all([api.coverage(), api.coverageStats().catch(() => null)]);
      if (!active) return;
      render(nodes, st, stats, body);
    } catch (e) {
      if (active) stats.replaceChildren(h('p', { class: 'error' }, 'Could not load coverage: ' + e.message));
    }
    if (active) timer = setTimeout(load, POLL_MS);
  };
  await load();
}

function render(nodes, st, stats, body) {
  const clusters = clusterStats(nodes, st);
  stats.replaceChildren(...clusters.map((c) => {
    const pct = c.total ? Math.round((100 * c.healthy) / c.total) : 0;
    return h('div', { class: 'card cluster', dataset: { cluster: c.name } },
      h('div', { class: 'cname' }, vis(c.name || '(no cluster)')),
      h('div', { class: 'pct' + (pct < 100 ? ' bad' : '') }, pct + '%'),
      h('div', { class: 'bar' }, h('span', { class: 'fill', dataset: { pct: String(pct) } })),
      h('div', { class: 'muted small' }, `${c.healthy} of ${c.total} nodes healthy`));
  }));
  // Bar widths are set through the CSSOM: the CSP forbids inline style attributes.
  for (const f of stats.querySelectorAll('.fill')) f.style.width = f.dataset.pct + '%';
  if (!nodes.length) {
    body.replaceChildren(h('tr', null, h('td', { colspan: '9', class: 'muted' }, 'No agent has reported yet.')));
    return;
  }
  body.replaceChildren(...nodes.map((n) => {
    const ok = healthy(n);
    const hooks = hooksOf(n);
    const att = hooks.filter((x) => x.attached);
    const failed = hooks.filter((x) => !x.attached && !x.optional);
    const d = drops(n);
    const dropped = d.reduce((a, [, v]) => a + v, 0);
    const last = n.lastHeartbeat || n.lastSeen || n.updatedAt;
    return h('tr', { class: ok ? '' : 'unhealthy', dataset: { node: nodeName(n) } },
      h('td', null, h('span', { class: 'status ' + (ok ? 'ok' : 'bad') }, ok ? 'Healthy' : 'Unhealthy')),
      h('td', null, h('div', null, vis(nodeName(n))), n.nodeId && n.nodeId !== nodeName(n) ? h('div', { class: 'muted small mono' }, vis(n.nodeId)) : null),
      h('td', null, vis(clusterOf(n))),
      h('td', { class: 'issue' }, ok ? '' : h('div', null, vis(plainIssue(n.issue || n.issues))),
        !ok && n.issue ? h('div', { class: 'muted small mono' }, vis(n.issue)) : null),
      h('td', null, vis(n.agentVersion || n.version || '')),
      h('td', { class: 'mono small' }, vis(n.kernel || n.kernelVersion || '')),
      h('td', null, hooks.length ? h('details', null,
        h('summary', null, `${att.length}/${hooks.length} attached` + (failed.length ? `, ${failed.length} failed` : '')),
        h('ul', { class: 'hooks' }, hooks.map((x) => h('li', { class: x.attached ? '' : 'bad' },
          (x.attached ? '✓ ' : '✗ ') + vis(x.hook) + (x.optional && !x.attached ? ' (optional)' : '') + (x.error ? ': ' + vis(x.error) : ''))))) : ''),
      h('td', { class: 'num', title: d.map(([k, v]) => `${k}: ${v}`).join('\n') }, dropped.toLocaleString()),
      h('td', { title: last ? new Date(last).toLocaleString() : '' }, last ? ago(last) : 'never'));
  }));
}

// clusterStats sums the server's per cluster and resource type groups by
// cluster; without them it counts the nodes.
function clusterStats(nodes, st) {
  if (st && Array.isArray(st.groups) && st.groups.length) {
    const m = new Map();
    for (const g of st.groups) {
      const c = m.get(g.cluster) || { name: g.cluster || '', healthy: 0, total: 0 };
      c.healthy += g.healthy || 0;
      c.total += g.total || 0;
      m.set(g.cluster, c);
    }
    return [...m.values()];
  }
  const m = new Map();
  for (const n of nodes) {
    const c = m.get(clusterOf(n)) || { name: clusterOf(n), healthy: 0, total: 0 };
    c.total++;
    if (healthy(n)) c.healthy++;
    m.set(c.name, c);
  }
  return [...m.values()];
}

