/**
 * Special-purpose address ranges (IANA IPv4 and IPv6 Special-Purpose Address Registries, RFC 6890
 * and its updates) plus multicast. A DNS answer for a domain rule that lands in one of these (or in
 * the overlay) is the DNS-rebinding pattern: a public name pointing the agent at loopback, the
 * cloud metadata service, the LAN or another agent. Such answers create no allowance unless a CIDR
 * rule allows the address itself (see the pump's upstream DNS path). Pure data and lookups.
 * Left out on purpose: the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
 * 2001:db8::/32, RFC 5737/3849). They name no host inside anyone's network, so an answer there points
 * at nothing a rebinding attack could reach, and they are what test networks use for "the internet".
 */
import { type Cidr, type IpAddr, cidrContains, embeddedIpv4, parseCidr } from '../net/addr.js';

/** [prefix, label] in registry order; the label names the range in audit lines. */
const RANGES: ReadonlyArray<readonly [string, string]> = [
  ['0.0.0.0/8', 'this network'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'shared address space (CGN)'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'IETF protocol assignments'],
  ['192.88.99.0/24', '6to4 relay anycast'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'benchmarking'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['::/96', 'IPv4-compatible'],
  ['::ffff:0:0/96', 'IPv4-mapped'],
  ['100::/64', 'discard-only'],
  ['2001::/23', 'IETF protocol assignments'],
  ['fc00::/7', 'unique local (private)'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'site-local'],
  ['ff00::/8', 'multicast'],
];

const COMPILED: ReadonlyArray<{ cidr: Cidr; label: string }> = RANGES.map(([s, label]) => {
  // The registry describes the IPv6 space itself: ::ffff:0:0/96 stays the IPv6 range it names.
  const p = parseCidr(s, { mapped: 'keep' });
  if (!p.ok) throw new Error(`bad special range ${s}`);
  return { cidr: p.cidr, label };
});

/**
 * The special range `a` falls in (its label), or undefined for a globally reachable unicast
 * address. Sees through IPv4 embedded in IPv6 (::ffff:127.0.0.1 is loopback; NAT64 and 6to4
 * addresses are judged by the IPv4 address they carry). `extra` adds ranges such as the overlay.
 */
export function specialRange(a: IpAddr, extra: ReadonlyArray<{ cidr: Cidr; label: string }> = []): string | undefined {
  const host: Cidr = { addr: a, bits: a.family === 4 ? 32 : 128 };
  for (const r of extra) if (cidrContains(r.cidr, host)) return r.label;
  const v4 = embeddedIpv4(a);
  if (v4 !== undefined) {
    const inner = specialRange(v4, extra);
    if (inner !== undefined) return `${inner}, embedded in IPv6`;
  }
  for (const r of COMPILED) if (cidrContains(r.cidr, host)) return r.label;
  return undefined;
}
