/**
 * The policy file format (JSON), its validation, and the normalised form the compiler consumes.
 * The README's Policy section is the user-facing description; keep the two in step.
 *
 * Validation collects every problem (path + what is wrong + how to fix it) instead of stopping
 * at the first, so a user fixes a file in one pass. Meaning of absent vs empty:
 *   - rule.ports absent = every port; []  = error (a rule that can never match is a mistake)
 *   - rule.cidrs / rule.domains / rule.peers: exactly one must be present and non-empty
 *   - rule.peers selects peers of the directory (labels or names, see labels.ts); it covers both
 *     address families of each selected peer, and follows the directory when bound (bindPeers)
 *   - rule.protocol absent = "any"
 *   - policy.egress / policy.ingress absent or [] = no rules (so everything is denied)
 *   - policy.mode absent = "enforce"
 */
import { LatticeError } from '../errors.js';
import { jsonSyntaxMessage } from '../jsontext.js';
import { type Cidr, formatIp, ipv4Reach, parseCidr } from '../net/addr.js';
import { type DirectorySnapshot, type PeerSelector, parsePeerSelectors, selectPeers } from './labels.js';

export const PolicyMode = { enforce: 'enforce', audit: 'audit', disabled: 'disabled' } as const;
export type PolicyMode = (typeof PolicyMode)[keyof typeof PolicyMode];

export const RuleAction = { allow: 'allow', deny: 'deny' } as const;
export type RuleAction = (typeof RuleAction)[keyof typeof RuleAction];

export const RuleProtocol = { tcp: 'tcp', udp: 'udp', icmp: 'icmp', any: 'any' } as const;
export type RuleProtocol = (typeof RuleProtocol)[keyof typeof RuleProtocol];

export const Direction = { egress: 'egress', ingress: 'ingress' } as const;
export type Direction = (typeof Direction)[keyof typeof Direction];

/** A rule as written in the file. */
export interface PolicyRuleInput {
  id: string;
  action: RuleAction;
  cidrs?: string[];
  domains?: string[];
  /** Peers by labels ({"role": "db"}) or by name ({"name": "alice"}); a list means any of them. */
  peers?: Record<string, unknown> | Array<Record<string, unknown>>;
  ports?: Array<number | string>;
  protocol?: RuleProtocol;
  expiresAt?: string;
  allowAnyAddress?: boolean;
  /**
   * true to let an egress allow rule with cidrs reach the host's own services through host egress
   * (loopback, link-local, the host's addresses, the launcher's networks); without it they stay denied.
   */
  allowHostAccess?: boolean;
  description?: string;
}

/** The file as written. */
export interface PolicyInput {
  version: 1;
  mode?: PolicyMode;
  egress?: PolicyRuleInput[];
  ingress?: PolicyRuleInput[];
  description?: string;
}

/** A validated rule: strings parsed, defaults applied. */
export interface PolicyRule {
  readonly id: string;
  readonly direction: Direction;
  /** Position in its direction's list, for messages. */
  readonly index: number;
  readonly action: RuleAction;
  readonly cidrs?: readonly Cidr[];
  /** Lowercase, no trailing dot; "*.example.com" keeps its "*." prefix. */
  readonly domains?: readonly string[];
  /**
   * Peer selectors (any of them). Until bound to a directory (bindPeers) the rule matches nothing;
   * bound, `cidrs` holds the selected peers' own addresses (/32 and /128) and `selected` their names.
   */
  readonly peers?: readonly PeerSelector[];
  /** Bound peer rules: "name.namespace" of each selected peer, in directory order. */
  readonly selected?: readonly string[];
  /** Inclusive [low, high] ranges; undefined = every port. */
  readonly ports?: ReadonlyArray<readonly [number, number]>;
  readonly protocol: RuleProtocol;
  /** Epoch ms; the rule is ignored from this instant on. undefined = never expires. */
  readonly expiresAtMs?: number;
  /** Set when the file says "allowHostAccess": true (only on egress allow rules with cidrs). */
  readonly allowHostAccess?: true;
}

export interface Policy {
  readonly version: 1;
  readonly mode: PolicyMode;
  readonly egress: readonly PolicyRule[];
  readonly ingress: readonly PolicyRule[];
}

export interface PolicyProblem {
  /** JSON path such as `egress[2].cidrs[0]`. */
  readonly path: string;
  readonly message: string;
  readonly fix: string;
}

export type ValidationResult = { ok: true; policy: Policy } | { ok: false; problems: PolicyProblem[] };

/** The policy file cannot be used; `problems` lists every reason. */
export class PolicyError extends LatticeError {
  override readonly name = 'PolicyError';
  constructor(
    readonly problems: readonly PolicyProblem[],
    options?: { cause?: unknown },
  ) {
    super('EPOLICY', `invalid policy: ${problems.map(formatProblem).join('; ')}`, options);
  }
}

/** One problem as one line: "path: what is wrong; what to do" ("(top)" for the document itself). */
export function formatProblem(p: PolicyProblem): string {
  return `${p.path || '(top)'}: ${p.message}; ${p.fix}`;
}

/** Limits that keep compile time and memory bounded for a hostile or generated policy. */
export const PolicyLimits = {
  maxRulesPerDirection: 1000,
  maxCidrsTotal: 10_000,
  maxDomainsTotal: 2000,
  maxPortEntriesPerRule: 256,
  /** Allow CIDRs shorter than these need allowAnyAddress: true (0.0.0.0/1 + 128.0.0.0/1 is "any" too). */
  minAllowPrefixV4: 8,
  minAllowPrefixV6: 16,
} as const;

/** Rule ids the evaluator reports itself; a rule may not take them. */
export const ReservedRuleIds = {
  defaultDeny: 'default-deny',
  modeDisabled: 'mode-disabled',
  hostServices: 'host-services',
  /** An ICMP error whose outer addresses are not its quoted packet's, reversed. */
  icmpErrorMismatch: 'icmp-error-mismatch',
  /** An ICMP error that quotes no known flow. */
  icmpErrorUnrelated: 'icmp-error-unrelated',
  /** An echo reply that answers no echo request. */
  icmpUnsolicitedReply: 'icmp-unsolicited-reply',
} as const;
const RESERVED_IDS: readonly string[] = Object.values(ReservedRuleIds);

const TOP_FIELDS = ['version', 'mode', 'egress', 'ingress', 'description'] as const;
const RULE_FIELDS = [
  'id',
  'action',
  'cidrs',
  'domains',
  'peers',
  'ports',
  'protocol',
  'expiresAt',
  'allowAnyAddress',
  'allowHostAccess',
  'description',
] as const;

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;
const LABEL_RE = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

function unknownFieldFix(key: string, known: readonly string[]): string {
  const lower = key.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const dist = editDistance(lower, k.toLowerCase());
    if (dist < bestD) {
      bestD = dist;
      best = k;
    }
  }
  if (best !== undefined && (bestD <= 2 || lower.startsWith(best.toLowerCase().slice(0, 4))))
    return `did you mean "${best}"? known fields: ${known.join(', ')}`;
  return `remove it; known fields: ${known.join(', ')}`;
}

/**
 * Normalise and check one domain pattern. Returns the normalised pattern or a problem.
 * Allowed: "api.example.com" (exactly that name) and "*.example.com" (any name below it, not the
 * apex). Rejected as over-broad: "*", "*.com" (a wildcard over a single label).
 */
export function normalizeDomainPattern(raw: string): { ok: true; value: string } | { ok: false; message: string; fix: string } {
  let s = raw.trim().toLowerCase();
  if (s.endsWith('.')) s = s.slice(0, -1);
  if (s === '*' || s === '*.' || s === '') {
    return { ok: false, message: `"${raw}" matches every name`, fix: 'list the names or use a wildcard below a registered domain such as "*.example.com"' };
  }
  const wildcard = s.startsWith('*.');
  const body = wildcard ? s.slice(2) : s;
  if (body.includes('*')) {
    return { ok: false, message: `"${raw}" has a "*" that is not a leading "*." label`, fix: 'a wildcard may only be the first label, as in "*.example.com"' };
  }
  if (body.length > 253) return { ok: false, message: `"${raw}" is longer than 253 characters`, fix: 'use a valid DNS name' };
  const labels = body.split('.');
  for (const l of labels) {
    if (!LABEL_RE.test(l)) {
      return { ok: false, message: `"${raw}" is not a DNS name (label "${l}")`, fix: 'labels are 1-63 of a-z, 0-9, "-" (not at either end)' };
    }
  }
  if (labels.length < 2) {
    return wildcard
      ? { ok: false, message: `"${raw}" is a wildcard over a whole top-level domain`, fix: 'use a wildcard below a registered domain such as "*.example.com"' }
      : { ok: false, message: `"${raw}" is a single-label name`, fix: 'use a fully qualified name such as "api.example.com"' };
  }
  if (/^\d+$/.test(labels[labels.length - 1])) {
    return { ok: false, message: `"${raw}" looks like an IP address`, fix: 'put addresses in "cidrs", not "domains"' };
  }
  return { ok: true, value: s };
}

/** Parse one `ports` entry: 443, "443" or "8000-8100". */
function parsePortEntry(v: unknown): { ok: true; range: [number, number] } | { ok: false; message: string; fix: string } {
  const isPort = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;
  if (typeof v === 'number') {
    if (isPort(v)) return { ok: true, range: [v, v] };
    return { ok: false, message: `${v} is not a port`, fix: 'use an integer from 1 to 65535' };
  }
  if (typeof v === 'string') {
    const m = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(v);
    if (!m) return { ok: false, message: `"${v}" is not a port or range`, fix: 'use 443 or "8000-8100"' };
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (!isPort(lo) || !isPort(hi)) return { ok: false, message: `"${v}" is out of range`, fix: 'ports are 1 to 65535' };
    if (lo > hi) return { ok: false, message: `"${v}" is reversed`, fix: `write it low-high: "${hi}-${lo}"` };
    return { ok: true, range: [lo, hi] };
  }
  return { ok: false, message: `${JSON.stringify(v)} is not a port`, fix: 'use 443 or "8000-8100"' };
}

function cidrProblem(raw: string, reason: 'syntax' | 'length' | 'host-bits', network?: string): { message: string; fix: string } {
  const v6 = raw.includes(':');
  switch (reason) {
    case 'host-bits':
      return { message: `"${raw}" has bits set after the prefix length`, fix: `use the network address "${network}" or a /${v6 ? 128 : 32} for one host` };
    case 'length':
      return v6
        ? { message: `"${raw}" is not a CIDR`, fix: 'use x:x::/n with n<=128' }
        : { message: `"${raw}" is not a CIDR`, fix: 'use a.b.c.d/n with n<=32' };
    default:
      return v6
        ? { message: `"${raw}" is not a CIDR`, fix: 'use x:x::/n with n<=128 (no zone index)' }
        : { message: `"${raw}" is not a CIDR`, fix: 'use a.b.c.d/n with n<=32 (or x:x::/n for IPv6)' };
  }
}

/** Check a parsed JSON value against the policy format. Never throws. */
export function validatePolicy(input: unknown): ValidationResult {
  const problems: PolicyProblem[] = [];
  const add = (path: string, message: string, fix: string) => problems.push({ path, message, fix });

  if (!isObject(input)) {
    add('', 'the policy is not a JSON object', 'write { "version": 1, "mode": "enforce", "egress": [], "ingress": [] }');
    return { ok: false, problems };
  }
  for (const key of Object.keys(input)) {
    if (!(TOP_FIELDS as readonly string[]).includes(key)) add(key, 'unknown field', unknownFieldFix(key, TOP_FIELDS));
  }
  if (input.version !== 1) add('version', `version ${JSON.stringify(input.version)} is not supported`, 'set "version": 1');
  let mode: PolicyMode = PolicyMode.enforce;
  if (input.mode !== undefined) {
    if (typeof input.mode === 'string' && Object.hasOwn(PolicyMode, input.mode)) mode = input.mode as PolicyMode;
    else add('mode', `${JSON.stringify(input.mode)} is not a mode`, 'use "enforce", "audit" or "disabled"');
  }
  if (input.description !== undefined && typeof input.description !== 'string') add('description', 'not a string', 'use a string or remove it');

  const ids = new Map<string, string>();
  const totals = { cidrs: 0, domains: 0 };
  const rulesOf = (dir: Direction): PolicyRule[] => {
    const raw = input[dir];
    if (raw === undefined) return [];
    if (!Array.isArray(raw)) {
      add(dir, 'not a list', `use "${dir}": [ { "id": "...", "action": "allow", ... } ]`);
      return [];
    }
    if (raw.length > PolicyLimits.maxRulesPerDirection) {
      add(dir, `${raw.length} rules`, `use at most ${PolicyLimits.maxRulesPerDirection} rules; merge CIDRs into fewer rules`);
      return [];
    }
    const out: PolicyRule[] = [];
    raw.forEach((r, i) => {
      const rule = validateRule(r, dir, i, `${dir}[${i}]`, add, ids, totals);
      if (rule) out.push(rule);
    });
    return out;
  };
  const egress = rulesOf(Direction.egress);
  const ingress = rulesOf(Direction.ingress);
  if (totals.cidrs > PolicyLimits.maxCidrsTotal) add('', `${totals.cidrs} CIDRs in total`, `use at most ${PolicyLimits.maxCidrsTotal}; aggregate adjacent prefixes`);
  if (totals.domains > PolicyLimits.maxDomainsTotal) add('', `${totals.domains} domains in total`, `use at most ${PolicyLimits.maxDomainsTotal}; use wildcards`);
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, policy: { version: 1, mode, egress, ingress } };
}

function validateRule(
  r: unknown,
  direction: Direction,
  index: number,
  path: string,
  add: (path: string, message: string, fix: string) => void,
  ids: Map<string, string>,
  totals: { cidrs: number; domains: number },
): PolicyRule | undefined {
  if (!isObject(r)) {
    add(path, 'a rule must be an object', 'write { "id": "allow-api", "action": "allow", "cidrs": ["10.0.0.0/24"] }');
    return undefined;
  }
  let ok = true;
  const bad = (p: string, message: string, fix: string) => {
    ok = false;
    add(`${path}${p}`, message, fix);
  };
  for (const key of Object.keys(r)) {
    if (!(RULE_FIELDS as readonly string[]).includes(key)) bad(`.${key}`, 'unknown field', unknownFieldFix(key, RULE_FIELDS));
  }

  const id = r.id;
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    bad('.id', `${JSON.stringify(id)} is not a rule id`, 'give every rule an "id" of 1-64 letters, digits, ".", "_" or "-" (it names the rule in audit events)');
  } else if (RESERVED_IDS.includes(id)) {
    bad('.id', `"${id}" is reserved`, 'choose another id');
  } else if (ids.has(id)) {
    bad('.id', `"${id}" is also the id of ${ids.get(id)}`, 'rule ids must be unique across egress and ingress');
  } else {
    ids.set(id, path);
  }

  const action = r.action;
  if (action !== RuleAction.allow && action !== RuleAction.deny) bad('.action', `${JSON.stringify(action)} is not an action`, 'use "allow" or "deny"');

  let protocol: RuleProtocol = RuleProtocol.any;
  if (r.protocol !== undefined) {
    if (typeof r.protocol === 'string' && Object.hasOwn(RuleProtocol, r.protocol)) protocol = r.protocol as RuleProtocol;
    else bad('.protocol', `${JSON.stringify(r.protocol)} is not a protocol`, 'use "tcp", "udp", "icmp" or "any" (or leave it out for any)');
  }

  if (r.allowAnyAddress !== undefined && typeof r.allowAnyAddress !== 'boolean') bad('.allowAnyAddress', 'not a boolean', 'use true or remove it');
  if (r.description !== undefined && typeof r.description !== 'string') bad('.description', 'not a string', 'use a string or remove it');
  const anyOk = r.allowAnyAddress === true;
  if (r.allowHostAccess !== undefined) {
    if (typeof r.allowHostAccess !== 'boolean') bad('.allowHostAccess', 'not a boolean', 'use true or remove it');
    else if (r.allowHostAccess && (direction !== Direction.egress || action !== RuleAction.allow || r.cidrs === undefined)) {
      bad('.allowHostAccess', 'only an egress allow rule with "cidrs" can open the host\'s services', 'name the host address in "cidrs" of an egress allow rule, or remove the flag');
    }
  }

  let cidrs: Cidr[] | undefined;
  let domains: string[] | undefined;
  let peers: PeerSelector[] | undefined;
  const targets = (['cidrs', 'domains', 'peers'] as const).filter((k) => r[k] !== undefined);
  if (targets.length > 1) {
    bad('', `has ${targets.length === 2 ? 'both ' : ''}${targets.map((k) => `"${k}"`).join(' and ')}`, `split it into ${targets.length} rules, one with each`);
  } else if (targets.length === 0) {
    bad('', 'has neither "cidrs", "domains" nor "peers"', 'add "cidrs": ["10.0.0.0/24"], "domains": ["api.example.com"] or "peers": {"role": "db"}');
  }
  if (r.peers !== undefined) {
    if (r.allowAnyAddress !== undefined) bad('.allowAnyAddress', 'a "peers" rule covers only the selected peers\' addresses', 'remove "allowAnyAddress"');
    const parsed = parsePeerSelectors(r.peers);
    if (parsed.ok) peers = parsed.selectors;
    else for (const [sub, message, fix] of parsed.problems) bad(`.peers${sub}`, message, fix);
  }
  if (r.cidrs !== undefined) {
    if (!Array.isArray(r.cidrs) || r.cidrs.length === 0) {
      bad('.cidrs', Array.isArray(r.cidrs) ? 'is empty (the rule would match nothing)' : 'not a list', 'list at least one CIDR such as "10.0.0.0/24", or remove the rule');
    } else {
      cidrs = [];
      totals.cidrs += r.cidrs.length;
      r.cidrs.forEach((c, j) => {
        if (typeof c !== 'string') return bad(`.cidrs[${j}]`, `${JSON.stringify(c)} is not a CIDR`, 'use a string such as "10.0.0.0/24"');
        const parsed = parseCidr(c.trim());
        if (!parsed.ok) {
          const p = cidrProblem(c, parsed.reason, parsed.network);
          return bad(`.cidrs[${j}]`, p.message, p.fix);
        }
        // parseCidr gives the one form per address: "::ffff:10.77.0.9" is 10.77.0.9 (src/net/addr.ts).
        const cidr = parsed.cidr;
        const min = cidr.addr.family === 4 ? PolicyLimits.minAllowPrefixV4 : PolicyLimits.minAllowPrefixV6;
        // The over-broad check also sees the IPv4 space an IPv6 prefix reaches (mapped, NAT64, 6to4).
        const reach = ipv4Reach(cidr);
        const viaV4 = cidr.bits >= min && cidr.addr.family === 6 && reach !== undefined && reach.bits < PolicyLimits.minAllowPrefixV4;
        if (action === RuleAction.allow && (cidr.bits < min || viaV4) && !anyOk) {
          const bits = viaV4 ? reach.bits : cidr.bits;
          const what = bits === 0 ? 'every address' : `a /${bits}, a large share of all addresses`;
          return bad(
            `.cidrs[${j}]`,
            viaV4 ? `"${c}" allows ${bits === 0 ? 'every IPv4 address' : `an IPv4 /${bits}`} through its ${reach.via} form` : `"${c}" allows ${what}`,
            `narrow it to the networks the agent needs, or set "allowAnyAddress": true on the rule if that is really meant`,
          );
        }
        cidrs?.push(cidr);
      });
    }
  }
  if (r.domains !== undefined) {
    if (direction === Direction.ingress) {
      bad('.domains', 'domain rules apply to egress only', 'use "cidrs" for ingress rules (the peer\'s address is not looked up by name)');
    } else if (!Array.isArray(r.domains) || r.domains.length === 0) {
      bad('.domains', Array.isArray(r.domains) ? 'is empty (the rule would match nothing)' : 'not a list', 'list at least one name such as "api.example.com", or remove the rule');
    } else {
      domains = [];
      totals.domains += r.domains.length;
      r.domains.forEach((d, j) => {
        if (typeof d !== 'string') return bad(`.domains[${j}]`, `${JSON.stringify(d)} is not a domain`, 'use a string such as "api.example.com"');
        const n = normalizeDomainPattern(d);
        if (!n.ok) return bad(`.domains[${j}]`, n.message, n.fix);
        domains?.push(n.value);
      });
    }
  }

  let ports: Array<[number, number]> | undefined;
  if (r.ports !== undefined) {
    if (!Array.isArray(r.ports) || r.ports.length === 0) {
      bad('.ports', Array.isArray(r.ports) ? 'is empty (the rule would match nothing)' : 'not a list', 'leave "ports" out to mean every port, or list ports like [443, "8000-8100"]');
    } else if (r.ports.length > PolicyLimits.maxPortEntriesPerRule) {
      bad('.ports', `${r.ports.length} entries`, `use at most ${PolicyLimits.maxPortEntriesPerRule}; use ranges`);
    } else if (protocol === RuleProtocol.icmp) {
      bad('.ports', 'ICMP has no ports', 'remove "ports" or change "protocol" to "tcp" or "udp"');
    } else {
      ports = [];
      r.ports.forEach((p, j) => {
        const parsed = parsePortEntry(p);
        if (!parsed.ok) return bad(`.ports[${j}]`, parsed.message, parsed.fix);
        ports?.push(parsed.range);
      });
    }
  }

  let expiresAtMs: number | undefined;
  if (r.expiresAt !== undefined) {
    const t = typeof r.expiresAt === 'string' && ISO_RE.test(r.expiresAt) ? Date.parse(r.expiresAt) : NaN;
    if (Number.isNaN(t)) {
      bad('.expiresAt', `${JSON.stringify(r.expiresAt)} is not an ISO-8601 instant`, 'use a time with a zone, e.g. "2030-01-31T18:00:00Z"');
    } else {
      expiresAtMs = t;
    }
  }

  if (!ok) return undefined;
  return {
    id: id as string,
    direction,
    index,
    action: action as RuleAction,
    ...(cidrs && { cidrs }),
    ...(domains && { domains }),
    ...(peers && { peers }),
    ...(ports && { ports }),
    protocol,
    ...(expiresAtMs !== undefined && { expiresAtMs }),
    ...(r.allowHostAccess === true && { allowHostAccess: true as const }),
  };
}

/** Parse JSON text and validate it. Throws PolicyError listing every problem. */
export function parsePolicy(text: string): Policy {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new PolicyError([{ path: '', message: `not valid JSON (${jsonSyntaxMessage(err, text)})`, fix: 'check the file with a JSON linter' }], { cause: err });
  }
  const res = validatePolicy(value);
  if (!res.ok) throw new PolicyError(res.problems);
  return res.policy;
}

/**
 * Bind the "peers" rules of a validated policy to a directory snapshot: each such rule gets the
 * selected peers' own addresses as its `cidrs` (both families; a peer's routes are not the peer) and
 * their names in `selected`. Other rules are returned as they are. Pure: call it again with the next
 * snapshot when the directory changes (a peer gains or loses a label, joins or leaves).
 */
export function bindPeers(policy: Policy, dir: DirectorySnapshot): Policy {
  if (![...policy.egress, ...policy.ingress].some((r) => r.peers)) return policy;
  const bind = (r: PolicyRule): PolicyRule => {
    if (!r.peers) return r;
    const chosen = selectPeers(r.peers, dir);
    const cidrs: Cidr[] = chosen.flatMap((p) => p.addresses.map((addr) => ({ addr, bits: addr.family === 4 ? 32 : 128 })));
    return { ...r, cidrs, selected: chosen.map((p) => `${p.name}.${p.namespace}`) };
  };
  return { ...policy, egress: policy.egress.map(bind), ingress: policy.ingress.map(bind) };
}

/** A key that changes exactly when bindPeers' result for `policy` would differ (cheap change test). */
export function peerBindingKey(policy: Policy): string {
  return JSON.stringify([...policy.egress, ...policy.ingress].filter((r) => r.peers).map((r) => [r.id, (r.cidrs ?? []).map((c) => formatIp(c.addr))]));
}
