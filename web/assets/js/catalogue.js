// The finding-type catalogue with the console's guidance per type, loaded
// once from /console/types.
import * as api from './api.js';

let cached = null;

// types returns the catalogue; concurrent callers share one request.
export function types() {
  if (!cached) {
    cached = api.catalogue().then((list) => ({ list, byType: new Map(list.map((k) => [k.type, k])) }));
    cached.catch(() => { cached = null; });
  }
  return cached;
}

// guide returns the "what this means / what to do" of a type; custom rule
// types, which the catalogue does not know, get the rule's own description.
export function guide(cat, f) {
  const k = cat.byType.get(f.type);
  if (k && k.means) return k;
  return {
    means: (f.description ? f.description + ' ' : '') + 'It was raised by a custom rule, not by a built-in detector.',
    do: ['Read the rule that raised it (see Detector below) for what its author meant it to catch.',
      'Look at the process, its parents and the container: is this behaviour expected for this workload?',
      'If it is expected, suppress findings like this one; if not, isolate the workload and investigate.'],
  };
}
