import {
  DnsAllowances,
  PolicyMode,
  compile,
  formatProblem,
  parseIp,
  validatePolicy,
  evaluate,
  type DirectorySnapshot,
  type IpAddr,
  type PolicyInput,
  type PolicyRule,
  formatSelector,
  ipEquals,
  type PolicyRuleInput,
} from '../policy/index.js';
import { badRequest } from './types.js';

/**
 * "Would a flow from agent A to X:port/proto be allowed now, by which rule; and if not, what is the
 * smallest rule that would allow it?" Pure: the agent's effective policy document and `now` in, an
 * answer out. It runs the launcher's own evaluator (src/policy evaluate) on the compiled policy, so
 * the answer is the decision a launcher holding that policy would take for the flow's first packet.
 *
 * A DNS name is answered as the launcher would after resolving it: the name is recorded as a DNS
 * allowance for `address` (or, without one, for the documentation address 192.0.2.1, RFC 5737, which
 * no CIDR rule should cover) and the flow to that address is evaluated. Egress only.
 *
 * Rules that select peers ("peers": labels or names) are bound to `directory`, the snapshot of the
 * peers the agent sees (without one they select nobody), and the answer names the selector and the
 * peers it selected. An address that is a peer's is answered with a rule naming that peer.
 */
export const EXPLAIN_PLACEHOLDER_ADDRESS = '192.0.2.1';

export interface ExplainQuery {
  /** Destination IP (v4 or v6). */
  address?: string;
  /** Destination DNS name. At least one of address/host. */
  host?: string;
  port: number;
  proto: 'tcp' | 'udp' | 'icmp';
}

export interface ExplainAnswer {
  allowed: boolean;
  /** What the policy says (allow | deny); `allowed` is what happens after the mode (audit lets denies through). */
  verdict: string;
  mode: string;
  /** The deciding rule's id, 'default-deny' when none matched, 'mode-disabled'. */
  ruleId: string;
  /** The deciding rule as written in the policy, when a rule decided. */
  rule?: PolicyRuleInput;
  /** A deciding "peers" rule: its selectors and the peers ("name.namespace") they select now. */
  peers?: { selectors: string[]; selected: string[] };
  /** The address evaluated (the given one, or the placeholder for a name). */
  evaluatedAddress: string;
  /** When denied by default: a minimal allow rule that would let exactly this flow through (checked). */
  suggestedRule?: PolicyRuleInput;
  /** One sentence for humans. */
  explanation: string;
}

const PROTO_NUMBER = { tcp: 6, udp: 17, icmp: 1 } as const;

/** Check an explain request body (a JSON object; proto tcp, udp or icmp, default tcp). Throws a bad-request ControlPlaneError. */
export function parseExplainQuery(b: unknown): ExplainQuery {
  if (typeof b !== 'object' || b === null || Array.isArray(b)) throw badRequest('explain query must be a JSON object');
  const q = b as Record<string, unknown>;
  const proto = q.proto ?? 'tcp';
  if (proto !== 'tcp' && proto !== 'udp' && proto !== 'icmp') throw badRequest('proto must be tcp, udp or icmp');
  const port = proto === 'icmp' ? 0 : q.port;
  if (!Number.isInteger(port) || (port as number) < 0 || (port as number) > 65535) throw badRequest('port must be an integer 0-65535');
  if (q.address !== undefined && (typeof q.address !== 'string' || !parseIp(q.address))) throw badRequest('address must be an IPv4 or IPv6 address');
  if (q.host !== undefined && (typeof q.host !== 'string' || !/^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$/.test(q.host))) {
    throw badRequest('host must be a DNS name');
  }
  if (q.address === undefined && q.host === undefined) throw badRequest('give address or host (or both)');
  return { address: q.address as string | undefined, host: q.host as string | undefined, port: port as number, proto };
}

/** The decision for `q` under `policy` (null = no policy: default deny) at `nowMs`. */
export function explainFlow(policy: unknown, q: ExplainQuery, nowMs: number, directory?: DirectorySnapshot): ExplainAnswer {
  const doc = (policy ?? { version: 1 }) as PolicyInput;
  const res = validatePolicy(doc);
  if (!res.ok) throw badRequest(`the agent's policy is invalid: ${formatProblem(res.problems[0])}`);
  const { decision, bound } = decideWith(doc, q, nowMs, directory);
  const evaluatedAddress = q.address ?? EXPLAIN_PLACEHOLDER_ADDRESS;
  const rule = (doc.egress ?? []).find((r) => r.id === decision.ruleId);
  const peers = bound?.peers ? { selectors: bound.peers.map(formatSelector), selected: [...(bound.selected ?? [])] } : undefined;
  const byRule = `rule ${decision.ruleId}${peers ? ` (peers ${peers.selectors.join(' or ')}: ${peers.selected.join(', ') || 'none'})` : ''}`;
  const target = `${q.host ?? q.address}${q.host && q.address ? ` (${q.address})` : ''}${q.proto === 'icmp' ? '' : `:${q.port}`}/${q.proto}`;
  const allowed = decision.effective === 'allow';
  const base: ExplainAnswer = {
    allowed,
    verdict: decision.verdict,
    mode: res.policy.mode,
    ruleId: decision.ruleId,
    ...(rule ? { rule } : {}),
    ...(peers ? { peers } : {}),
    evaluatedAddress,
    explanation: '',
  };
  if (res.policy.mode === PolicyMode.disabled) return { ...base, explanation: `policy mode is disabled: every flow is allowed, including ${target}` };
  if (decision.verdict === 'allow') return { ...base, explanation: `${target} is allowed by ${byRule}` };
  const audit = res.policy.mode === PolicyMode.audit ? ' (audit mode: it would pass, logged as would-deny)' : '';
  if (decision.ruleId !== 'default-deny') {
    return {
      ...base,
      explanation: `${target} is denied by deny ${byRule}${audit}; deny rules win over allow rules, so remove or narrow ${decision.ruleId} to allow it`,
    };
  }
  const suggestedRule = minimalAllowRule(q, directory);
  // Check the suggestion with the evaluator itself rather than trusting the construction.
  const withRule: PolicyInput = { ...doc, egress: [...(doc.egress ?? []), suggestedRule] };
  const ok = validatePolicy(withRule).ok && decideWith(withRule, q, nowMs, directory).decision.verdict === 'allow';
  return {
    ...base,
    ...(ok ? { suggestedRule } : {}),
    explanation: `${target} is denied by default: no rule allows it${audit}${ok ? `; adding rule ${suggestedRule.id} would allow exactly this` : ''}`,
  };
}

/**
 * An allow rule for this one destination, port and protocol: the name, the peer whose address it is
 * ("peers": {"name": ...}, which covers both of its addresses), or the address (/32, /128).
 */
export function minimalAllowRule(q: ExplainQuery, directory?: DirectorySnapshot): PolicyRuleInput {
  const addr = q.address !== undefined ? parseIp(q.address) : undefined;
  const peer = !q.host && addr ? directory?.peers.find((p) => p.addresses.some((a) => ipEquals(a, addr))) : undefined;
  if (peer && directory) {
    const name = peer.namespace === directory.namespace ? peer.name : `${peer.name}.${peer.namespace}`;
    return {
      id: `allow-${name.replace(/\./g, '-')}-${q.proto}${q.proto === 'icmp' ? '' : `-${q.port}`}`.slice(0, 64).replace(/-+$/, ''),
      action: 'allow',
      peers: { name },
      ...(q.proto === 'icmp' ? {} : { ports: [q.port] }),
      protocol: q.proto,
    };
  }
  const dest = q.host ? q.host.replace(/\.$/, '').toLowerCase() : q.address!;
  const id = `allow-${dest.replace(/[^A-Za-z0-9]+/g, '-')}-${q.proto}${q.proto === 'icmp' ? '' : `-${q.port}`}`.slice(0, 64).replace(/-+$/, '');
  const ip = q.host ? undefined : parseIp(q.address!);
  return {
    id,
    action: 'allow',
    ...(q.host ? { domains: [dest] } : { cidrs: [`${q.address}/${(ip as IpAddr).family === 4 ? 32 : 128}`] }),
    ...(q.proto === 'icmp' ? {} : { ports: [q.port] }),
    protocol: q.proto,
  };
}

function decideWith(doc: PolicyInput, q: ExplainQuery, nowMs: number, directory?: DirectorySnapshot) {
  const res = validatePolicy(doc);
  if (!res.ok) throw badRequest(`invalid policy: ${formatProblem(res.problems[0])}`);
  const compiled = compile(res.policy, directory);
  const remote = parseIp(q.address ?? EXPLAIN_PLACEHOLDER_ADDRESS)!;
  let allowances: DnsAllowances | undefined;
  if (q.host) {
    allowances = new DnsAllowances();
    allowances.record(q.host, [remote], 60, nowMs);
  }
  const decision = evaluate(compiled, { direction: 'egress', protocol: PROTO_NUMBER[q.proto], remote, dstPort: q.port }, nowMs, allowances);
  const bound: PolicyRule | undefined = compiled.policy.egress.find((r) => r.id === decision.ruleId);
  return { decision, bound };
}
