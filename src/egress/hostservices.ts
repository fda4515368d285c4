/**
 * The host's own services are never reachable through host egress by accident.
 *
 * Host egress hands allowed packets to the host kernel, which forwards them; a packet addressed to
 * the host itself (its addresses, loopback), to link-local services (169.254.169.254, the cloud
 * metadata endpoint) or to a network the launcher sits on would reach things no internet rule was
 * meant to open. So after the policy has allowed an egress flow, this guard asks one more question:
 * is the destination special? If so, only a live egress allow rule that names it in `cidrs` and
 * carries `"allowHostAccess": true` may let it through; anything else becomes a deny with rule id
 * `host-services`, in every mode (audit and disabled modes included: the guard is a property of
 * host egress, not of the policy).
 *
 * Pure: the special ranges are given at construction (src/egress/host.ts reads them from the host),
 * the policy and `now` per call. It reuses the policy compiler for prefix matching.
 */
import {
  compile,
  evaluate,
  parseCidr,
  PolicyMode,
  ReservedRuleIds,
  RuleAction,
  RuleProtocol,
  type Decision,
  type FlowQuery,
  type CompiledPolicy,
  type Policy,
  type PolicyRule,
} from '../policy/index.js';
import type { Cidr } from '../net/addr.js';
import { LatticeError } from '../errors.js';

/** Always special, whatever the host looks like (RFC 6890 special-purpose blocks a host serves or keeps local). */
export const ALWAYS_SPECIAL: readonly string[] = [
  '0.0.0.0/8', // "this network"
  '127.0.0.0/8', // loopback
  '169.254.0.0/16', // link-local, incl. 169.254.169.254 (cloud metadata)
  '224.0.0.0/4', // multicast
  '255.255.255.255/32', // limited broadcast
  '::/128',
  '::1/128',
  '::ffff:0:0/96', // IPv4-mapped: would smuggle the IPv4 ranges above
  'fe80::/10',
  'ff00::/8',
];

/** The decision for a special destination no host-access rule names. */
export const HOST_SERVICES_DENY: Decision = Object.freeze({
  verdict: 'deny',
  effective: 'deny',
  ruleId: ReservedRuleIds.hostServices,
  wouldDeny: false,
  record: true,
});

export class HostServicesError extends LatticeError {
  override readonly name = 'HostServicesError';
  constructor(message: string) {
    super('EEGRESS_HOST_SERVICES', message);
  }
}

/** A table entry: kept as written, so ::ffff:0:0/96 denies the IPv6 range (src/net/addr.ts). */
function cidrOf(s: string): Cidr {
  const p = parseCidr(s, { mapped: 'keep' });
  if (!p.ok) throw new HostServicesError(`"${s}" is not a CIDR (host address or route read from the host); report this as a bug`);
  return p.cidr;
}

function matcher(rules: PolicyRule[]): CompiledPolicy {
  return compile({ version: 1, mode: PolicyMode.enforce, egress: rules, ingress: [] });
}

/**
 * Decides whether a flow reaches one of the host's own services (its addresses, the launcher's
 * networks, ALWAYS_SPECIAL): such flows are denied unless an egress allow rule with
 * `allowHostAccess` names the address. Pure: CIDR strings in, decisions out.
 */
export class HostServicesGuard {
  private readonly special: CompiledPolicy;
  private policy?: Policy;
  private hostAccess: CompiledPolicy = matcher([]);

  /**
   * @param specialCidrs the host's own addresses and the launcher's networks, as "a.b.c.d/n" or
   *   "x::/n" strings (host bits may be set: "192.0.2.2/24" means the network 192.0.2.0/24);
   *   ALWAYS_SPECIAL is added. Throws HostServicesError on a string that is not a CIDR.
   */
  constructor(specialCidrs: Iterable<string>) {
    const cidrs: Cidr[] = [];
    for (const s of [...ALWAYS_SPECIAL, ...specialCidrs]) cidrs.push(cidrOf(networkOf(s)));
    this.special = matcher([{ id: 'special', direction: 'egress', index: 0, action: RuleAction.allow, cidrs, protocol: RuleProtocol.any }]);
  }

  /** Whether `q.remote` is one of the host's services (any protocol, any port). */
  isSpecial(q: FlowQuery): boolean {
    return evaluate(this.special, { ...q, direction: 'egress' }, 0).effective === 'allow';
  }

  /**
   * The final decision for an egress flow the policy decided as `decision`: unchanged unless the
   * destination is special; then allowed only by a live allowHostAccess rule of `policy`.
   */
  vet(q: FlowQuery, decision: Decision, policy: Policy, now: number): Decision {
    if (q.direction !== 'egress' || !this.isSpecial(q)) return decision;
    if (decision.effective !== 'allow') return decision;
    if (policy !== this.policy) {
      this.policy = policy;
      // The user's deny rules stay in: a host-access allow never overrides a deny.
      this.hostAccess = matcher(policy.egress.filter((r) => r.action === RuleAction.deny || r.allowHostAccess === true));
    }
    const d = evaluate(this.hostAccess, q, now);
    return d.effective === 'allow' ? d : HOST_SERVICES_DENY;
  }
}

/** "192.0.2.2/24" -> "192.0.2.0/24": the network a host address with its prefix length sits on. */
export function networkOf(s: string): string {
  const slash = s.indexOf('/');
  if (slash < 0) return s;
  const p = parseCidr(s, { mapped: 'keep' });
  if (p.ok) return s;
  if (p.reason === 'host-bits' && p.network) return p.network;
  return s;
}
