import type { AuditEventDraft } from '../audit/events.js';
import { formatIp, ipEquals, parseIp, type IpAddr } from '../policy/index.js';

/*
 * Why was a flow to a peer denied? Overlay names answer both an A and an AAAA record, and a resolver
 * (busybox nc, for one) may pick IPv6. A policy that lists only 10.77.0.0/16 then refuses the peer the
 * user meant to allow, and "rule=default-deny" alone does not say why. This adds a `note` to such a
 * denial: whose address it is, and whether the peer's other address would have been allowed.
 */

export interface PeerAddresses {
  /** <name>.<namespace>.lattice */
  name: string;
  addresses: IpAddr[];
}

/** The egress decision for (address, protocol number, port), as the live policy would make it. */
export type CheckEgress = (remote: IpAddr, protocol: number, port: number) => { verdict: string; ruleId?: string; wouldDeny?: boolean };

const PROTO_NUMBER: Record<string, number> = { tcp: 6, udp: 17, icmp: 1, icmpv6: 58 };
/** The overlay pools (README, "Overlay addresses"). */
const OVERLAY_RANGE = { 4: '10.77.0.0/16', 6: 'fd77::/48' } as const;

/** `event` with a `note` when it is an egress denial of a peer's address; otherwise `event` itself. */
export function explainDenial(event: AuditEventDraft, peers: readonly PeerAddresses[], check: CheckEgress): AuditEventDraft {
  if (event.type !== 'flow.opened' || event.direction !== 'egress' || event.verdict === 'allowed') return event;
  const dst = parseIp(event.dstIp);
  if (!dst) return event;
  const peer = peers.find((p) => p.addresses.some((a) => ipEquals(a, dst)));
  if (!peer) return event;
  const fam = dst.family;
  const other = peer.addresses.find((a) => a.family !== fam);
  const protocol = PROTO_NUMBER[event.proto] ?? 6;
  const otherDecision = other ? check(other, fam === 4 ? protocol : protocol === 58 ? 1 : protocol, event.dstPort) : undefined;
  const what = `${event.dstIp} is peer ${peer.name}'s IPv${fam} address`;
  const note =
    other && otherDecision && otherDecision.verdict === 'allow' && !otherDecision.wouldDeny
      ? `${what}; its IPv${other.family} address ${formatIp(other)} is allowed (rule ${otherDecision.ruleId ?? '?'}) but no rule covers IPv${fam}: add ${OVERLAY_RANGE[fam]} (or the /${fam === 4 ? 32 : 128}) to that rule`
      : `${what}; no rule allows port ${event.dstPort}/${event.proto} to it in either family`;
  return { ...event, note } as AuditEventDraft;
}
