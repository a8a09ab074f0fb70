// Coverage: every cluster and node, Healthy or Unhealthy, and for an
// Unhealthy one the reason in plain words.
import { h, mount, vis, ago, fmtTime } from './dom.js';
import * as api from './api.js';

const POLL_MS = 5000;
let timer = 0;
let active = false;
let lastSig = '';

export function stopCoverage() {
  active = false;
  clearTimeout(timer);
}

// What each issue type means for the node and what to do, in plain words.
// The issue's extra information (after the colon) says the specifics.
const ISSUES = {
  EXCLUDED_BY_LABEL: 'Deliberately not monitored. Remove the label mamori.io/managed=false to cover it.',
  AGENT_EXITED: 'The agent stopped, so nothing on this node is watched. Check its log and restart it.',
  AGENT_NOT_REPORTING: 'The server has not heard from the agent. Check that it runs and can reach the server (network, credentials); findings it detects meanwhile are spooled on the node.',
  KERNEL_NO_BTF: 'The kernel lacks BTF type information, so the sensor cannot load. Use a kernel built with CONFIG_DEBUG_INFO_BTF (most distributions since 5.8).',
  SENSOR_FAILED: 'The agent runs but its kernel sensor did not load, so no behaviour is seen. Check the error: privileges (root, CAP_BPF) and kernel support.',
  HOOK_ATTACH_FAILED: 'Part of the sensor is missing: the behaviours that hook watches go unseen on this node. Check the error and the kernel configuration.',
  EVENTS_DROPPED: 'The node produced more events than the agent could take, so some behaviour went unseen. Give the agent more CPU or larger buffers.',
  RUNTIME_UNREACHABLE: 'The agent cannot ask the container runtime, so findings may lack pod, container and image names. Mount the runtime socket into the agent.',
  NO_HEARTBEAT: 'The agent enrolled but never reported. Check that it started and can reach the server.',
  HOOK_DETACHED: 'Another root process detached part of the sensor; the agent re-attached it within seconds, but behaviour in between may have gone unseen. Find out who did it (the time is in the reason).',
  SERVER_BEHIND: 'The server is behind on agent messages, refuses them for now because its disk is low, or cannot store them while its database is down, so this node may well be reporting: its heartbeats wait in the server\'s queue or in the node\'s spool. Give the server more CPU or replicas, free disk space or bring the database back; watch mamori_transport_stream_backlog_messages and mamori_transport_intake_paused.',
};

// explainIssue splits "TYPE:extra information" into the specifics, with a
// capital, and the plain-words meaning of the type.
export function explainIssue(issue) {
  const s = String(issue || '');
  const i = s.indexOf(':');
  const typ = (i < 0 ? s : s.slice(0, i)).trim();
  const extra = i < 0 ? '' : s.slice(i + 1).trim();
  const words = typ.replace(/([a-z])([A-Z])/g, '$1 $2').replace(/[_-]+/g, ' ').toLowerCase();
  // Times in the reason are shown in the reader's zone, with their age.
  const what = (extra || words).replace(/\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)/g,
    (ts) => `${fmtTime(ts)} (${ago(ts)})`);
  return { type: typ, what: what.charAt(0).toUpperCase() + what.slice(1), means: ISSUES[typ.toUpperCase()] || '' };
}

// view reads a node as the API serves it: a coverage status with the
// heartbeat's facts at top level, or a stored row with the heartbeat inside.
function view(n) {
  const hb = n.heartbeat || {};
  const pick = (k) => (n[k] !== undefined ? n[k] : hb[k]);
  return {
    name: n.hostname || hb.hostname || n.nodeId || '',
    nodeId: n.nodeId || '',
    cluster: n.cluster || hb.cluster || '',
    healthy: String(n.status || '').toLowerCase() === 'healthy',
    issues: n.issues && n.issues.length ? n.issues : n.issue ? [n.issue] : [],
    version: pick('agentVersion') || '',
    kernel: pick('kernel') || '',
    objects: pick('bpfObjects') || '',
    hooks: pick('hooks') || [],
    drops: pick('drops') || {},
    lastMinute: n.droppedLastMinute || {},
    last: n.lastHeartbeat,
    runtimes: pick('runtimes') || [],
  };
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
      render(nodes.map(view), st, stats, body);
    } catch (e) {
      if (active) stats.replaceChildren(h('p', { class: 'error' }, 'Could not load coverage: ' + e.message));
    }
    if (active) timer = setTimeout(load, POLL_MS);
  };
  await load();
}

function render(nodes, st, stats, body) {
  // Unchanged data leaves the DOM alone (an opened hook list stays open).
  const sig = JSON.stringify([nodes, st]);
  if (sig === lastSig && body.childElementCount) return;
  lastSig = sig;
  const clusters = clusterStats(nodes, st);
  stats.replaceChildren(...clusters.map((c) => {
    const pct = c.total ? Math.round((100 * c.healthy) / c.total) : 0;
    return h('div', { class: 'card cluster', dataset: { cluster: c.name } },
      h('div', { class: 'cname' }, vis(c.name || 'standalone hosts')),
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
    const att = n.hooks.filter((x) => x.attached);
    const failed = n.hooks.filter((x) => !x.attached && !x.optional);
    const total = Object.values(n.drops).reduce((a, v) => a + v, 0);
    const recent = Object.values(n.lastMinute).reduce((a, v) => a + v, 0);
    return h('tr', { class: n.healthy ? '' : 'unhealthy', dataset: { node: n.nodeId } },
      h('td', null, h('span', { class: 'status ' + (n.healthy ? 'ok' : 'bad') }, n.healthy ? 'Healthy' : 'Unhealthy')),
      h('td', null, h('div', null, vis(n.name)), n.nodeId !== n.name ? h('div', { class: 'muted small mono' }, vis(n.nodeId)) : null),
      h('td', null, vis(n.cluster)),
      h('td', { class: 'issue' }, n.issues.map((is) => {
        const e = explainIssue(is);
        return h('div', { class: 'one-issue' },
          h('div', { class: 'what' }, vis(e.what)),
          e.means ? h('div', { class: 'means small' }, e.means) : null,
          h('div', { class: 'muted small mono' }, vis(e.type)));
      })),
      h('td', null, vis(n.version)),
      h('td', { class: 'mono small' }, vis(n.kernel), n.objects.startsWith('compat')
        ? h('div', { class: 'muted small', title: vis(n.objects) }, 'BPF objects for older kernels') : null),
      h('td', null, n.hooks.length ? h('details', null,
        h('summary', null, `${att.length}/${n.hooks.length} attached` + (failed.length ? `, ${failed.length} failed` : '')),
        h('ul', { class: 'hooks' }, n.hooks.map((x) => h('li', { class: x.attached ? '' : x.optional ? 'muted' : 'bad' },
          (x.attached ? '✓ ' : '✗ ') + vis(x.hook || x.program) + (x.optional && !x.attached ? ' (optional)' : '') +
          (x.error ? ': ' + vis(x.error) : ''))))) : ''),
      h('td', { class: 'num', title: Object.entries(n.drops).map(([k, v]) => `${k}: ${v}`).join('\n') },
        total.toLocaleString(), recent ? h('div', { class: 'small warn' }, `${recent.toLocaleString()} in the last minute`) : null),
      h('td', { title: n.last ? new Date(n.last).toLocaleString() : '' }, n.last && !String(n.last).startsWith('0001') ? ago(n.last) : 'never'));
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
    const c = m.get(n.cluster) || { name: n.cluster, healthy: 0, total: 0 };
    c.total++;
    if (n.healthy) c.healthy++;
    m.set(n.cluster, c);
  }
  return [...m.values()];
}

