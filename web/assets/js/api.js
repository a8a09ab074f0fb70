// The API client. Calls go to /console/api/..., where the server swaps the
// HttpOnly cookie for the session token it holds; the custom header is the
// CSRF guard (see web/session.go). Every shape the server's API has is mapped
// here, so the views speak one vocabulary.

const H = { 'X-Mamori-Console': '1' };

export class APIError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) { onUnauthorized = f; }

async function call(method, path, body) {
  const opt = { method, headers: { ...H }, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    opt.headers['Content-Type'] = 'application/json';
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(path, opt);
  let data = null;
  const text = await r.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { error: text.slice(0, 300) }; }
  }
  if (r.status === 401 && !path.startsWith('/console/login')) onUnauthorized();
  if (!r.ok) {
    const msg = (data && (data.error || data.message)) || r.statusText;
    throw new APIError(r.status, r.status === 403 ? 'not allowed with this token: ' + msg : msg);
  }
  return data;
}

const v1 = (p) => '/console/api/v1' + p;

export const login = (token) => call('POST', '/console/login', { token });
export const logout = () => call('POST', '/console/logout');
export const session = () => call('GET', '/console/session');
export const catalogue = () => call('GET', '/console/types');

// findings lists one page. q: filters (severity, type, tactic, cluster,
// namespace, image, archived), sort, order, limit, cursor.
export async function findings(q) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== '' && v !== undefined && v !== null) p.set(k, v);
  const d = await call('GET', v1('/findings?' + p));
  return { items: d.findings || [], total: d.total >= 0 ? d.total : null, next: d.next || '' };
}

export const finding = (id) => call('GET', v1('/findings/' + encodeURIComponent(id)));
export const archive = (ids) => call('POST', v1('/findings/archive'), { ids });
export const unarchive = (ids) => call('POST', v1('/findings/unarchive'), { ids });
export const samples = () => call('POST', v1('/sample-findings'), {});

export const suppressionRules = async () => (await call('GET', v1('/suppression-rules'))).rules || [];
// createSuppression saves rule {name, description, action, criteria}; with
// applyExisting an ARCHIVE rule also archives the stored findings it matches.
export const deleteRule = (id) => call('DELETE', v1('/suppression-rules/' + encodeURIComponent(id)));
export const createSuppression = (rule, applyExisting) =>
  call('POST', v1('/suppression-rules' + (applyExisting ? '?applyExisting=true' : '')), rule);

export const coverage = async () => (await call('GET', v1('/coverage'))).nodes || [];
// coverageStats returns {overall, groups: [{cluster, resourceType, total, healthy, unhealthy, issues}]}.
export const coverageStats = () => call('GET', v1('/coverage/statistics'));

// health is {status: "ok"|"degraded", problems: [...]}: what keeps the
// server from taking or storing agent messages now.
export const health = () => call('GET', v1('/health'));
