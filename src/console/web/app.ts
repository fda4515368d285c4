/*
 * The lattice console (browser side). Plain DOM, no framework, built by tsc (src/console/web/tsconfig.json).
 *
 * Rules this file keeps:
 *   - every value from the server is put into the page as text (createTextNode / textContent): names, DNS
 *     names, tool arguments and diffs come from agents and may hold markup. There is no innerHTML here,
 *     and h() refuses on* attributes.
 *   - it talks only to the documented HTTP API (/api/v1/agent-isolation/...) and /console/session;
 *     authentication is the HttpOnly session cookie, and the CSRF token lives in a variable only.
 */

const API = '/api/v1/agent-isolation';

// ---------------------------------------------------------------------------------------------
// DOM helpers: text only.

type Child = Node | string | number | null | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string | undefined> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function s<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, ...children: Child[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(el, Object.fromEntries(Object.entries(attrs).map(([k, v]) => [k, String(v)])));
  append(el, children);
  return el;
}

function setAttrs(el: Element, attrs: Record<string, string | undefined>): void {
  for (const [k, v] of Object.entries(attrs)) {
    if (/^on/i.test(k)) throw new Error(`event handler attributes are not allowed: ${k}`);
    if (v !== undefined) el.setAttribute(k, v);
  }
}

function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`no #${id}`);
  return el as T;
}

function diffView(diff: string, id?: string): HTMLPreElement {
  const pre = h('pre', { id, class: 'diff' });
  if (!diff) pre.append(h('span', { class: 'ctx muted' }, '(no change)'));
  for (const line of diff ? diff.split('\n') : []) {
    pre.append(h('span', { class: line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : 'ctx' }, line));
  }
  return pre;
}

const time = (iso: string | number) => new Date(iso).toLocaleString();

// ---------------------------------------------------------------------------------------------
// API client: cookie session + CSRF header on unsafe methods.

let csrf: string | undefined;

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-lattice-csrf'] = csrf;
  const res = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!res.ok) {
    const err = (data as { error?: { code?: string; message?: string } } | undefined)?.error;
    if (res.status === 401 && !path.startsWith('/console/session')) signedOut('Your session ended; sign in again.');
    throw new ApiError(res.status, err?.code ?? `HTTP${res.status}`, err?.message ?? `HTTP ${res.status}`);
  }
  return data as T;
}

const qs = (q: Record<string, string | undefined>) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v) p.set(k, v);
  const t = p.toString();
  return t ? `?${t}` : '';
};

// ---------------------------------------------------------------------------------------------
// Shapes of the API answers this page reads (see README, "The web console" and the admin API).

/** Mirrors AgentView (src/controlplane/service.ts): this script is a separate program and cannot import it. */
interface Agent {
  agentId: string;
  name: string;
  namespace: string;
  status: string;
  ipv4?: string;
  ipv6?: string;
  endpoint?: string;
  allowedTools: string[];
  allowedNamespaces: string[];
  createdAt: string;
}

type AuditEvent = Record<string, unknown> & { type: string; ts: string; agentId: string; namespace: string; streamSeq?: number };

interface Approval {
  id: string;
  kind: string;
  status: string;
  namespace: string;
  name?: string;
  proposer: string;
  reason?: string;
  summary: string;
  diff: string;
  createdAt: number;
  decidedBy?: string;
  note?: string;
}

interface PolicyProblem {
  path: string;
  message: string;
  fix: string;
}

// ---------------------------------------------------------------------------------------------
// State and shell.

let agents: Agent[] = [];
let live: EventSource | undefined;
let lastAgentsRefresh = 0;
const liveSection = buildLive();

const VIEWS: Record<string, () => Promise<HTMLElement> | HTMLElement> = {
  Agents: agentsView,
  Live: () => liveSection,
  Audit: auditView,
  Policy: policyView,
  Approvals: approvalsView,
};

async function show(name: string): Promise<void> {
  for (const b of byId('nav').querySelectorAll('button')) {
    if (b.dataset.view === name) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  const main = byId('main');
  try {
    main.replaceChildren(await VIEWS[name]());
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) main.replaceChildren(h('p', { class: 'error' }, (err as Error).message));
  }
}

function signedOut(message?: string): void {
  csrf = undefined;
  live?.close();
  live = undefined;
  byId('nav').replaceChildren();
  byId('who').replaceChildren();
  const token = h('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: '' });
  const msg = h('p', { id: 'signin-message', class: 'error' }, message ?? '');
  const form = h(
    'form',
    { id: 'signin', class: 'signin' },
    h('h2', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Paste your admin token (from `lattice admin user add`; root\'s is the file <state>/control-plane/admin-token on the control-plane host).'),
    h('label', {}, 'Admin token', token),
    h('p', {}, h('button', { type: 'submit' }, 'Sign in')),
    msg,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    call<SessionReply>('POST', '/console/session', { token: token.value })
      .then((r) => {
        token.value = '';
        csrf = r.csrf;
        signedIn(r.user);
      })
      .catch((err: Error) => (msg.textContent = err.message));
  });
  byId('main').replaceChildren(h('section', {}, form));
  token.focus();
}

/** POST/GET /console/session: the CSRF token and who signed in. */
interface SessionReply {
  csrf: string;
  user: { name: string; role: string };
}

function signedIn(user: SessionReply['user']): void {
  const nav = byId('nav');
  nav.replaceChildren(
    ...Object.keys(VIEWS).map((name) => {
      const b = h('button', { type: 'button', 'data-view': name }, name);
      b.addEventListener('click', () => void show(name));
      return b;
    }),
  );
  const out = h('button', { type: 'button', id: 'signout' }, 'Sign out');
  out.addEventListener('click', () => {
    call('DELETE', '/console/session')
      .catch(() => undefined)
      .finally(() => signedOut());
  });
  byId('who').replaceChildren(h('span', { class: 'muted', id: 'signed-in-as' }, `signed in as ${user.name} (${user.role})`), out);
  startLive();
  void show('Agents');
}

async function refreshAgents(): Promise<Agent[]> {
  lastAgentsRefresh = Date.now();
  agents = (await call<{ agents: Agent[] }>('GET', `${API}/agents`)).agents;
  return agents;
}

function agentLabel(ev: { agentId?: unknown; namespace?: unknown }): string {
  const a = agents.find((x) => x.agentId === ev.agentId);
  if (a) return `${a.namespace}/${a.name}`;
  if (Date.now() - lastAgentsRefresh > 5000) void refreshAgents().catch(() => undefined);
  return `${String(ev.namespace)}/${String(ev.agentId).slice(0, 8)}`;
}

// ---------------------------------------------------------------------------------------------
// Agents and their peers.

/** Two agents are peers when they share a namespace or one may reach the other's namespace. */
function peers(a: Agent, b: Agent): boolean {
  return a.agentId !== b.agentId && (a.namespace === b.namespace || a.allowedNamespaces.includes(b.namespace) || b.allowedNamespaces.includes(a.namespace));
}

async function agentsView(): Promise<HTMLElement> {
  const list = [...(await refreshAgents())].sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  const W = 640;
  const H = 420;
  const R = Math.min(W, H) / 2 - 60;
  const pos = list.map((_, i) => {
    const t = (2 * Math.PI * i) / Math.max(1, list.length) - Math.PI / 2;
    return { x: W / 2 + R * Math.cos(t), y: H / 2 + R * Math.sin(t) };
  });
  const graph = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'graph', id: 'agent-graph', role: 'img' });
  graph.append(s('title', {}, 'Agents and their peers'));
  for (let i = 0; i < list.length; i++) for (let j = i + 1; j < list.length; j++) {
    if (peers(list[i], list[j])) graph.append(s('line', { x1: pos[i].x, y1: pos[i].y, x2: pos[j].x, y2: pos[j].y }));
  }
  list.forEach((a, i) => {
    const g = s('g', { 'data-agent': a.agentId });
    g.append(s('circle', { cx: pos[i].x, cy: pos[i].y, r: 9, class: a.status === 'active' ? 'active' : 'revoked' }, s('title', {}, `${a.namespace}/${a.name} ${a.ipv4 ?? ''}`)));
    g.append(s('text', { x: pos[i].x + 12, y: pos[i].y + 4 }, `${a.namespace}/${a.name}`));
    graph.append(g);
  });
  const rows = list.map((a) =>
    h(
      'tr',
      { 'data-agent': a.agentId },
      h('td', { class: 'agent-name' }, a.name),
      h('td', {}, a.namespace),
      h('td', {}, a.status),
      h('td', {}, [a.ipv4, a.ipv6].filter(Boolean).join(' ')),
      h('td', {}, a.endpoint ?? ''),
      h('td', {}, String(list.filter((b) => peers(a, b)).length)),
      h('td', {}, a.allowedTools.join(', ')),
    ),
  );
  return h(
    'div',
    {},
    h('section', {}, h('h2', {}, `Agents (${list.length}) and their peers`), list.length ? graph : h('p', { class: 'muted' }, 'No agents enrolled yet.')),
    h(
      'section',
      {},
      h('table', { id: 'agents' }, h('thead', {}, h('tr', {}, ...['name', 'namespace', 'status', 'address', 'endpoint', 'peers', 'tools'].map((t) => h('th', {}, t)))), h('tbody', {}, ...rows)),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Live flows and denials (server-sent events from the audit stream).

const ENVELOPE = new Set(['v', 'id', 'seq', 'launcherId', 'agentId', 'namespace', 'ts', 'type', 'streamSeq']);

function details(ev: AuditEvent): string {
  const parts: string[] = [];
  if (typeof ev.srcIp === 'string') parts.push(`${String(ev.proto ?? '')} ${ev.srcIp}:${String(ev.srcPort ?? '')} -> ${String(ev.dstIp)}:${String(ev.dstPort ?? '')}`);
  for (const [k, v] of Object.entries(ev)) {
    if (ENVELOPE.has(k) || ['proto', 'srcIp', 'srcPort', 'dstIp', 'dstPort'].includes(k)) continue;
    parts.push(`${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  return parts.join('  ');
}

/** denied | would-deny | allowed | '' for an event, for highlighting and filtering. */
function verdictOf(ev: AuditEvent): string {
  if (typeof ev.verdict === 'string') return ev.verdict;
  if (ev.type === 'dns.refused') return 'denied';
  if (ev.decision === 'deny') return 'denied';
  if (ev.decision === 'would-deny') return 'would-deny';
  return '';
}

function buildLive(): HTMLElement {
  const status = h('span', { id: 'live-status', 'data-state': 'closed', class: 'muted' }, 'not connected');
  const onlyDenied = h('input', { type: 'checkbox', id: 'live-denied-only' });
  const list = h('ul', { id: 'live-list' });
  onlyDenied.addEventListener('change', () => {
    for (const li of list.querySelectorAll('li')) li.hidden = onlyDenied.checked && !/deny|denied/.test(li.dataset.verdict ?? '');
  });
  return h(
    'section',
    { id: 'live' },
    h('h2', {}, 'Live flows and denials'),
    h('div', { class: 'row' }, status, h('label', {}, 'denials only', onlyDenied)),
    list,
  );
}

function startLive(): void {
  live?.close();
  // The last 15 minutes first, then live; a reconnect resumes after the last event seen (Last-Event-ID).
  const es = new EventSource(`${API}/audit/live?since=15m`);
  live = es;
  const status = liveSection.querySelector<HTMLElement>('#live-status')!;
  const list = liveSection.querySelector<HTMLUListElement>('#live-list')!;
  const onlyDenied = liveSection.querySelector<HTMLInputElement>('#live-denied-only')!;
  es.onopen = () => {
    status.dataset.state = 'open';
    status.textContent = 'live';
  };
  es.onerror = () => {
    status.dataset.state = 'closed';
    status.textContent = es.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting...';
    if (es.readyState === EventSource.CLOSED) void call('GET', '/console/session').catch(() => undefined);
  };
  es.addEventListener('audit', (e) => {
    let ev: AuditEvent;
    try {
      ev = JSON.parse((e as MessageEvent<string>).data) as AuditEvent;
    } catch {
      return;
    }
    const verdict = verdictOf(ev);
    const li = h(
      'li',
      { 'data-type': ev.type, 'data-verdict': verdict, 'data-seq': String(ev.streamSeq ?? '') },
      h('span', { class: 'muted' }, new Date(ev.ts).toLocaleTimeString()),
      '  ',
      h('strong', {}, agentLabel(ev)),
      '  ',
      ev.type,
      '  ',
      h('span', { class: 'details' }, details(ev)),
    );
    li.hidden = onlyDenied.checked && !/deny|denied/.test(verdict);
    list.prepend(li);
    while (list.childElementCount > 500) list.lastElementChild?.remove();
  });
}

// ---------------------------------------------------------------------------------------------
// Audit search.

const FAMILIES = ['', 'flow', 'dns', 'tool', 'sandbox', 'policy', 'enrollment', 'approval'];

function auditView(): HTMLElement {
  const ns = h('input', { name: 'namespace', placeholder: 'any' });
  const agent = h('select', { name: 'agentId' }, h('option', { value: '' }, 'any'), ...agents.map((a) => h('option', { value: a.agentId }, `${a.namespace}/${a.name}`)));
  const type = h('select', { name: 'type' }, ...FAMILIES.map((f) => h('option', { value: f }, f || 'any')));
  const since = h('input', { name: 'since', value: '1h', size: '6' });
  const out = h('div', { id: 'audit-results' });
  const form = h(
    'form',
    { class: 'row', id: 'audit-form' },
    h('label', {}, 'namespace', ns),
    h('label', {}, 'agent', agent),
    h('label', {}, 'type', type),
    h('label', {}, 'since', since),
    h('button', { type: 'submit' }, 'Search'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    out.replaceChildren(h('p', { class: 'muted' }, 'Searching...'));
    call<{ events: AuditEvent[]; scanned: number; truncated: boolean }>('GET', `${API}/audit/events${qs({ namespace: ns.value.trim(), agentId: agent.value, type: type.value, since: since.value.trim(), limit: '500' })}`)
      .then((r) => {
        const rows = [...r.events].reverse().map((ev) =>
          h('tr', { 'data-verdict': verdictOf(ev), 'data-type': ev.type }, h('td', {}, time(ev.ts)), h('td', {}, agentLabel(ev)), h('td', {}, ev.type), h('td', { class: 'details' }, details(ev))),
        );
        out.replaceChildren(
          h('p', { class: 'muted' }, `${r.events.length} events (${r.scanned} read${r.truncated ? ', truncated: narrow the search' : ''})`),
          h('table', {}, h('thead', {}, h('tr', {}, ...['time', 'agent', 'type', 'details'].map((t) => h('th', {}, t)))), h('tbody', {}, ...rows)),
        );
      })
      .catch((err: Error) => out.replaceChildren(h('p', { class: 'error' }, err.message)));
  });
  return h('section', {}, h('h2', {}, 'Audit search'), form, out);
}

// ---------------------------------------------------------------------------------------------
// Policy editor: the validator's messages inline, a diff preview, propose or apply.

const TEMPLATE = { version: 1, mode: 'enforce', egress: [], ingress: [] };

function policyView(): HTMLElement {
  const namespaces = [...new Set(agents.map((a) => a.namespace))].sort();
  const ns = h('input', { id: 'policy-namespace', list: 'policy-namespaces', value: namespaces[0] ?? '', placeholder: 'namespace' });
  const datalist = h('datalist', { id: 'policy-namespaces' }, ...namespaces.map((n) => h('option', { value: n })));
  const load = h('button', { type: 'button', id: 'policy-load' }, 'Load');
  const text = h('textarea', { id: 'policy-text', spellcheck: 'false' });
  const status = h('p', { id: 'policy-status', class: 'muted' });
  const problems = h('ul', { id: 'policy-problems', class: 'problems' });
  const diffBox = h('div', { id: 'policy-diff-box' });
  const propose = h('button', { type: 'button', id: 'policy-propose', disabled: '' }, 'Propose for approval');
  const apply = h('button', { type: 'button', id: 'policy-apply', disabled: '' }, 'Apply now');
  const result = h('p', { id: 'policy-result' });
  let seq = 0;
  let timer: number | undefined;

  const check = async () => {
    const mine = ++seq;
    const name = ns.value.trim();
    const r = await call<{ ok: boolean; problems: PolicyProblem[]; diff: string; hasCurrent: boolean }>('POST', `${API}/policies/${encodeURIComponent(name)}/check`, { text: text.value });
    if (mine !== seq) return;
    problems.replaceChildren(...r.problems.map((p) => h('li', { 'data-path': p.path }, `${p.path || '(top)'}: ${p.message}; ${p.fix}`)));
    status.textContent = r.ok ? 'valid' : `${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}`;
    status.className = r.ok ? 'ok' : 'error';
    diffBox.replaceChildren(h('h2', {}, r.hasCurrent ? 'Diff against the current policy' : 'Diff (the namespace has no policy yet)'), diffView(r.ok ? r.diff : '', 'policy-diff'));
    propose.disabled = apply.disabled = !r.ok || !r.diff;
  };
  const checkSoon = () => {
    propose.disabled = apply.disabled = true;
    clearTimeout(timer);
    timer = window.setTimeout(() => void check().catch((err: Error) => (status.textContent = err.message)), 250);
  };
  text.addEventListener('input', checkSoon);
  load.addEventListener('click', () => {
    result.textContent = '';
    call<{ policy: unknown }>('GET', `${API}/policies/${encodeURIComponent(ns.value.trim())}`)
      .then((r) => r.policy)
      .catch((err: unknown) => {
        if (err instanceof ApiError && err.status === 404) return TEMPLATE;
        throw err;
      })
      .then((p) => {
        text.value = JSON.stringify(p, null, 2);
        return check();
      })
      .catch((err: Error) => (status.textContent = err.message));
  });
  // The buttons are enabled only after a check said the text is a valid policy.
  const edited = (): unknown => JSON.parse(text.value);
  propose.addEventListener('click', () => {
    const policy = edited();
    call<Approval>('POST', `${API}/approvals`, { kind: 'set-policy', namespace: ns.value.trim(), policy })
      .then((a) => (result.textContent = `Proposed: ${a.summary} (approval ${a.id}); see Approvals.`))
      .catch((err: Error) => (result.textContent = err.message));
  });
  apply.addEventListener('click', () => {
    const policy = edited();
    call<{ updatedAt: string }>('PUT', `${API}/policies/${encodeURIComponent(ns.value.trim())}`, policy)
      .then((r) => {
        result.textContent = `Applied at ${time(r.updatedAt)}.`;
        return check();
      })
      .catch((err: Error) => (result.textContent = err.message));
  });
  if (ns.value) setTimeout(() => load.click(), 0);
  return h(
    'section',
    {},
    h('h2', {}, 'Policy editor'),
    h('div', { class: 'row' }, h('label', {}, 'namespace', ns), datalist, load),
    text,
    status,
    problems,
    diffBox,
    h('div', { class: 'row' }, propose, apply),
    result,
  );
}

// ---------------------------------------------------------------------------------------------
// Approvals queue.

async function approvalsView(): Promise<HTMLElement> {
  const status = h('select', { id: 'approvals-status' }, ...['pending', 'approved', 'rejected', 'stale', 'failed'].map((v) => h('option', { value: v }, v)));
  const list = h('div', { id: 'approvals' });
  const message = h('p', { id: 'approvals-message' });
  const render = async () => {
    const { approvals } = await call<{ approvals: Approval[] }>('GET', `${API}/approvals${qs({ status: status.value })}`);
    list.replaceChildren(...(approvals.length ? approvals.map(card) : [h('p', { class: 'muted' }, `No ${status.value} changes.`)]));
  };
  const decide = (a: Approval, verb: 'approve' | 'reject', note: string) => {
    call<{ approval?: Approval; token?: string }>('POST', `${API}/approvals/${encodeURIComponent(a.id)}/${verb}`, { ...(note ? { note } : {}) })
      .then((r) => {
        message.replaceChildren(`${a.summary}: ${r.approval?.status ?? verb + 'd'}${r.approval?.note ? ` (${r.approval.note})` : ''}`);
        if (r.token) message.append(h('br'), 'Token (shown once): ', h('code', { id: 'approved-token' }, r.token));
        return render();
      })
      .catch((err: Error) => message.replaceChildren(h('span', { class: 'error' }, err.message)));
  };
  const card = (a: Approval) => {
    const note = h('input', { placeholder: 'note (optional)', size: '30' });
    const yes = h('button', { type: 'button', class: 'approve' }, 'Approve');
    const no = h('button', { type: 'button', class: 'reject' }, 'Reject');
    yes.addEventListener('click', () => decide(a, 'approve', note.value.trim()));
    no.addEventListener('click', () => decide(a, 'reject', note.value.trim()));
    return h(
      'div',
      { class: 'card', 'data-id': a.id, 'data-status': a.status },
      h('strong', {}, a.summary),
      h('p', { class: 'muted' }, `${a.kind} · ${a.namespace}${a.name ? '/' + a.name : ''} · proposed by ${a.proposer} · ${time(a.createdAt)}${a.decidedBy ? ` · decided by ${a.decidedBy}` : ''}`),
      a.reason ? h('p', {}, `Reason: ${a.reason}`) : null,
      a.note ? h('p', {}, `Note: ${a.note}`) : null,
      diffView(a.diff),
      a.status === 'pending' ? h('div', { class: 'row' }, note, yes, no) : null,
    );
  };
  status.addEventListener('change', () => void render().catch((err: Error) => message.replaceChildren(err.message)));
  await render();
  return h('section', {}, h('h2', {}, 'Approvals'), h('div', { class: 'row' }, h('label', {}, 'status', status)), message, list);
}

// ---------------------------------------------------------------------------------------------

call<SessionReply>('GET', '/console/session')
  .then((r) => {
    csrf = r.csrf;
    signedIn(r.user);
  })
  .catch(() => signedOut());
