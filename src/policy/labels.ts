/**
 * Peer labels and the peer selectors of policy rules. Pure: no I/O.
 *
 * Labels follow the Kubernetes label syntax (kubernetes.io "Labels and Selectors", "Syntax and
 * character set"):
 *   key   = [prefix "/"] name
 *           prefix: a DNS subdomain, at most 253 characters (lowercase labels joined by ".")
 *           name:   1-63 of [A-Za-z0-9._-], beginning and ending with [A-Za-z0-9]
 *   value = "" or 1-63 of [A-Za-z0-9._-], beginning and ending with [A-Za-z0-9]
 * Lattice's own limits on top: at most LabelLimits.maxPerPeer labels per peer, and the key "name"
 * is reserved (a selector's "name" means the peer's name, not a label).
 *
 * A selector is a map: "name" (a string or a list of them) matches the peer's name, written
 * "alice" (the policy's own namespace) or "alice.ns"; every other key must be a label the peer has
 * with exactly that value. All of a selector's entries must match (AND); a rule's list of
 * selectors matches a peer that any of them matches (OR).
 */
import type { IpAddr } from '../net/addr.js';

export type Labels = Readonly<Record<string, string>>;

export const LabelLimits = {
  maxPerPeer: 32,
  maxPrefix: 253,
  maxName: 63,
  maxValue: 63,
  /** Entries in one selector, names in one selector's "name" list, selectors in one rule. */
  maxSelectorEntries: 32,
  maxNamesPerSelector: 256,
  maxSelectorsPerRule: 32,
} as const;

/** The selector key that names peers; not a label key. */
export const NAME_SELECTOR = 'name';

const NAME_RE = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;
const DNS_LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Why `key` is not a label key, or undefined when it is one. */
export function labelKeyProblem(key: string): string | undefined {
  if (key === NAME_SELECTOR) return `"${key}" is reserved (a selector's "name" is the peer's name); choose another key such as "app"`;
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined) {
    if (prefix.length === 0 || prefix.length > LabelLimits.maxPrefix || !prefix.split('.').every((l) => DNS_LABEL_RE.test(l))) {
      return `the prefix of "${key}" is not a DNS subdomain; write "example.com/role" (lowercase, at most ${LabelLimits.maxPrefix} characters) or drop the prefix`;
    }
  }
  if (name.length === 0 || name.length > LabelLimits.maxName || !NAME_RE.test(name)) {
    return `"${key}" is not a label key; use 1-${LabelLimits.maxName} of letters, digits, ".", "_", "-", beginning and ending with a letter or digit (optionally after "prefix/")`;
  }
  return undefined;
}

/** Why `value` is not a label value, or undefined when it is one ("" is a value). */
export function labelValueProblem(value: unknown): string | undefined {
  if (typeof value !== 'string') return `${JSON.stringify(value)} is not a label value; use a string`;
  if (value === '') return undefined;
  if (value.length > LabelLimits.maxValue || !NAME_RE.test(value)) {
    return `"${value}" is not a label value; use at most ${LabelLimits.maxValue} of letters, digits, ".", "_", "-", beginning and ending with a letter or digit`;
  }
  return undefined;
}

/** Every problem of a label set, one string each (empty: valid). */
export function labelsProblems(labels: unknown): string[] {
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) return ['labels must be an object of key: value strings'];
  const out: string[] = [];
  const entries = Object.entries(labels);
  if (entries.length > LabelLimits.maxPerPeer) out.push(`${entries.length} labels; a peer carries at most ${LabelLimits.maxPerPeer}`);
  for (const [k, v] of entries) {
    const kp = labelKeyProblem(k);
    if (kp) out.push(kp);
    const vp = labelValueProblem(v);
    if (vp) out.push(`label ${k}: ${vp}`);
  }
  return out;
}

/** A change of labels as an operator writes it: "k=v" sets, "k-" removes. */
export interface LabelEdit {
  readonly set: Labels;
  readonly remove: readonly string[];
}

/**
 * Parse `k=v` / `k-` arguments (the `lattice agent label` and `token create --labels` syntax).
 * Returns the edit or every problem, one line each.
 */
export function parseLabelArgs(args: readonly string[]): { ok: true; edit: LabelEdit } | { ok: false; problems: string[] } {
  const set: Record<string, string> = {};
  const remove: string[] = [];
  const problems: string[] = [];
  for (const a of args) {
    const eq = a.indexOf('=');
    if (eq < 0) {
      if (a.endsWith('-') && a.length > 1) {
        const k = a.slice(0, -1);
        const p = labelKeyProblem(k);
        if (p) problems.push(p);
        else remove.push(k);
      } else problems.push(`"${a}" is neither key=value (set) nor key- (remove)`);
      continue;
    }
    const k = a.slice(0, eq);
    const v = a.slice(eq + 1);
    const kp = labelKeyProblem(k);
    if (kp) problems.push(kp);
    const vp = labelValueProblem(v);
    if (vp) problems.push(`label ${k}: ${vp}`);
    if (!kp && !vp) {
      if (Object.hasOwn(set, k) && set[k] !== v) problems.push(`label ${k} is given twice with different values`);
      set[k] = v;
    }
  }
  for (const k of remove) if (Object.hasOwn(set, k)) problems.push(`label ${k} is both set and removed`);
  return problems.length ? { ok: false, problems } : { ok: true, edit: { set, remove } };
}

/** Apply an edit; returns the new labels (keys sorted) or the problem when too many would result. */
export function applyLabelEdit(current: Labels | undefined, edit: LabelEdit): { ok: true; labels: Labels } | { ok: false; problem: string } {
  const next: Record<string, string> = { ...(current ?? {}) };
  for (const k of edit.remove) delete next[k];
  Object.assign(next, edit.set);
  const n = Object.keys(next).length;
  if (n > LabelLimits.maxPerPeer) return { ok: false, problem: `${n} labels; a peer carries at most ${LabelLimits.maxPerPeer}; remove some with key-` };
  return { ok: true, labels: Object.fromEntries(Object.keys(next).sort().map((k) => [k, next[k]])) };
}

/** A validated selector: names (qualified "name.ns" or plain) and labels, all of which must match. */
export interface PeerSelector {
  readonly names?: readonly string[];
  readonly labels: Labels;
}

/** One peer as the policy sees the directory: who it is, what it carries, its own overlay addresses. */
export interface DirectoryPeer {
  readonly name: string;
  readonly namespace: string;
  readonly labels?: Labels;
  /** The peer's own addresses (its IPv4 and IPv6 overlay address); routes it carries are not the peer. */
  readonly addresses: readonly IpAddr[];
}

/** The directory as a policy is bound against it: the policy's own namespace and the peers in view. */
export interface DirectorySnapshot {
  readonly namespace: string;
  readonly peers: readonly DirectoryPeer[];
}

const PEER_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$/;

/**
 * Validate a rule's "peers" value: one selector object or a non-empty list of them. Returns the
 * selectors, or problems as [subpath, message, fix] triples.
 */
export function parsePeerSelectors(raw: unknown): { ok: true; selectors: PeerSelector[] } | { ok: false; problems: Array<[string, string, string]> } {
  const problems: Array<[string, string, string]> = [];
  const list = Array.isArray(raw) ? raw : [raw];
  const example = 'write {"role": "db"} (labels) or {"name": "alice"} / {"name": ["alice", "bob.other-ns"]}';
  if (list.length === 0) return { ok: false, problems: [['', 'an empty list selects no peer', example]] };
  if (list.length > LabelLimits.maxSelectorsPerRule) return { ok: false, problems: [['', `${list.length} selectors`, `use at most ${LabelLimits.maxSelectorsPerRule}`]] };
  const selectors: PeerSelector[] = [];
  list.forEach((s, i) => {
    const at = Array.isArray(raw) ? `[${i}]` : '';
    if (typeof s !== 'object' || s === null || Array.isArray(s)) {
      problems.push([at, `${JSON.stringify(s)} is not a selector`, example]);
      return;
    }
    const entries = Object.entries(s as Record<string, unknown>);
    if (entries.length === 0) {
      problems.push([at, 'an empty selector would select every peer', `name the labels or peers it means; ${example}`]);
      return;
    }
    if (entries.length > LabelLimits.maxSelectorEntries) {
      problems.push([at, `${entries.length} entries`, `use at most ${LabelLimits.maxSelectorEntries}`]);
      return;
    }
    let names: string[] | undefined;
    const labels: Record<string, string> = {};
    for (const [k, v] of entries) {
      if (k === NAME_SELECTOR) {
        const ns = typeof v === 'string' ? [v] : v;
        if (!Array.isArray(ns) || ns.length === 0 || ns.length > LabelLimits.maxNamesPerSelector) {
          problems.push([`${at}.name`, `${JSON.stringify(v)} is not a peer name or a list of them`, `write "alice", "alice.other-ns" or a list of 1-${LabelLimits.maxNamesPerSelector} such names`]);
          continue;
        }
        const bad = ns.filter((n) => typeof n !== 'string' || !PEER_NAME_RE.test(n));
        for (const n of bad) problems.push([`${at}.name`, `${JSON.stringify(n)} is not a peer name`, 'a peer name is a DNS label (a-z, 0-9, -), optionally followed by ".namespace"']);
        if (bad.length === 0) names = [...new Set(ns as string[])];
        continue;
      }
      const kp = labelKeyProblem(k);
      if (kp) problems.push([`${at}.${k}`, 'not a label key', kp]);
      const vp = labelValueProblem(v);
      if (vp) problems.push([`${at}.${k}`, 'not a label value', vp]);
      if (!kp && !vp) labels[k] = v as string;
    }
    selectors.push({ ...(names ? { names } : {}), labels });
  });
  return problems.length ? { ok: false, problems } : { ok: true, selectors };
}

/** Whether `sel` selects `peer`, `namespace` being the policy's own (for unqualified names). */
export function selects(sel: PeerSelector, peer: DirectoryPeer, namespace: string): boolean {
  if (sel.names && !sel.names.some((n) => (n.includes('.') ? n === `${peer.name}.${peer.namespace}` : n === peer.name && peer.namespace === namespace))) return false;
  for (const [k, v] of Object.entries(sel.labels)) if (peer.labels?.[k] !== v) return false;
  return true;
}

/** The peers any of `selectors` selects, in directory order. */
export function selectPeers(selectors: readonly PeerSelector[], dir: DirectorySnapshot): DirectoryPeer[] {
  return dir.peers.filter((p) => selectors.some((s) => selects(s, p, dir.namespace)));
}

/** A selector as one line for people: `role=db,tier=1` or `name=alice|bob`. */
export function formatSelector(sel: PeerSelector): string {
  const parts = Object.entries(sel.labels).map(([k, v]) => `${k}=${v}`);
  if (sel.names) parts.unshift(`name=${sel.names.join('|')}`);
  return parts.join(',');
}
