// Reading findings: where a finding happened, in the terms the list shows.
import { get } from './dom.js';

// where returns the finding's resource: cluster, namespace, pod,
// container (name and id), image and node.
export function where(f) {
  const r = f.resource || {};
  const c = r.containerDetails || {};
  const k = get(r, 'kubernetesDetails.kubernetesWorkloadDetails') || {};
  const e = r.ecsClusterDetails || {};
  const i = r.instanceDetails || {};
  return {
    type: r.resourceType || '',
    cluster: f.cluster || get(r, 'eksClusterDetails.name') || e.name || '',
    namespace: k.namespace || '',
    pod: k.name || '',
    task: get(e, 'taskDetails.arn') || '',
    container: c.name || '',
    containerId: c.id || '',
    runtime: c.containerRuntime || '',
    image: c.image || '',
    privileged: !!get(c, 'securityContext.privileged'),
    node: i.hostname || i.nodeId || get(f, 'service.additionalInfo.agentDetails.agentId') || '',
    nodeId: i.nodeId || '',
  };
}

export const short = (id) => (id && id.length > 12 ? id.slice(0, 12) : id || '');

// suppressionCriteria proposes the criteria of a rule that suppresses
// findings like f: same type, and the same workload and actor where known.
// Each entry says whether it is on by default.
export function suppressionCriteria(f) {
  const w = where(f);
  const p = get(f, 'service.runtimeDetails.process') || {};
  const out = [{ field: 'type', op: 'eq', value: f.type, on: true }];
  if (w.image) out.push({ field: 'resource.containerDetails.image', op: 'eq', value: w.image, on: true });
  if (p.executablePath) out.push({ field: 'service.runtimeDetails.process.executablePath', op: 'eq', value: p.executablePath, on: true });
  if (w.namespace) out.push({ field: 'resource.kubernetesDetails.kubernetesWorkloadDetails.namespace', op: 'eq', value: w.namespace, on: false });
  if (w.cluster) out.push({ field: 'cluster', op: 'eq', value: w.cluster, on: false });
  if (w.nodeId) out.push({ field: 'resource.instanceDetails.nodeId', op: 'eq', value: w.nodeId, on: false });
  return out;
}
