// DOM helpers. Runtime strings (paths, argv, names) are attacker-controlled:
// they only ever enter the page as Text nodes or attribute values set
// through the DOM, never as HTML. This file has no innerHTML on purpose;
// the tests grep the assets for it.

// h builds an element. props: class, text, on<event> handlers, dataset
// (object), and plain attributes. Children: strings and numbers become
// Text nodes; arrays are flattened; null, undefined and false are skipped.
export function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'href') el.setAttribute('href', safeHref(v));
    else if (k === 'value') el.value = v;
    else if (k === 'checked' || k === 'disabled' || k === 'selected' || k === 'open') el[k] = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, kids);
  return el;
}

function append(el, kids) {
  for (const k of kids) {
    if (k === null || k === undefined || k === false) continue;
    if (Array.isArray(k)) append(el, k);
    else if (k instanceof Node) el.appendChild(k);
    else el.appendChild(document.createTextNode(String(k)));
  }
}

// Links are in-app routes only: nothing from the data becomes a URL.
function safeHref(v) {
  const s = String(v);
  return s.startsWith('#') ? s : '#';
}

// vis makes invisible and direction-changing characters visible, so a
// name cannot hide text or reverse how the rest of a line reads.
const hidden = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;
export function vis(s) {
  if (s === null || s === undefined) return '';
  return String(s).replace(hidden, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

// argv renders a command line, quoting arguments a shell would split.
export function argv(args) {
  if (!Array.isArray(args)) return '';
  return args.map((a) => {
    const s = vis(a);
    return s === '' || /[\s"'\\$`|&;<>()*?!#~]/.test(s) ? JSON.stringify(s) : s;
  }).join(' ');
}

// Formatters are built once: building one per cell costs more than the
// rest of a row.
const thisYear = new Date().getFullYear();
const fmtShort = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
const fmtLong = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });

export function fmtTime(s) {
  if (!s) return '';
  const d = new Date(s);
  if (isNaN(d) || d.getFullYear() < 1971) return '';
  return (d.getFullYear() === thisYear ? fmtShort : fmtLong).format(d);
}

export function ago(s) {
  const d = new Date(s);
  if (!s || isNaN(d)) return '';
  const sec = Math.round((Date.now() - d.getTime()) / 1000);
  if (sec < 5) return 'just now';
  if (sec < 60) return sec + ' s ago';
  if (sec < 3600) return Math.floor(sec / 60) + ' min ago';
  if (sec < 86400) return Math.floor(sec / 3600) + ' h ago';
  return Math.floor(sec / 86400) + ' d ago';
}

// time renders a timestamp with the relative age as its tooltip.
export function time(s) {
  return h('time', { datetime: s || '', title: ago(s) }, fmtTime(s));
}

export function sevLabel(n) {
  if (n >= 9) return 'Critical';
  if (n >= 7) return 'High';
  if (n >= 4) return 'Medium';
  return 'Low';
}

export function sevBadge(n, label) {
  const l = label || sevLabel(n);
  return h('span', { class: 'sev sev-' + l.toLowerCase(), title: 'severity ' + n }, l);
}

// get walks a dotted path through nested objects.
export function get(o, path) {
  let cur = o;
  for (const seg of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[seg];
  }
  return cur;
}

// kv renders rows of [label, value]; empty values are left out.
export function kv(rows) {
  const dl = h('dl', { class: 'kv' });
  for (const [k, v] of rows) {
    if (v === undefined || v === null || v === '') continue;
    dl.append(h('dt', null, k), h('dd', null, v instanceof Node ? v : vis(v)));
  }
  return dl;
}

let toastTimer;
export function toast(msg, bad) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.className = bad ? 'toast bad' : 'toast';
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 3500);
}

export function mount(...nodes) {
  const main = document.getElementById('main');
  main.replaceChildren(...nodes);
  return main;
}
