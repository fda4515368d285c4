/**
 * The one address module: every IP address and CIDR prefix in lattice is parsed, formatted, masked,
 * compared and read from packet bytes here. Pure: no I/O, no module state.
 *
 * Two in-memory forms, both owned here, so hot paths never parse strings:
 *   - words (`IpAddr`): family plus four unsigned 32-bit words, most significant first (IPv4 uses w0
 *     only). The policy evaluator, flow table and DNS allowances compare these.
 *   - bytes (`Uint8Array` of 4 or 16, network order; `Prefix`): WireGuard's allowed-IPs trie walks
 *     these, and `innerAddresses` hands out views of a packet's own bytes without copying.
 *
 * One answer for each odd input (table test: test/net/addr.test.ts):
 *   - Leading zeros in IPv4 ("010.0.0.1", "1.2.3.04"): refused, as inet_pton(3) does; "010" is octal
 *     to inet_aton and decimal to others. Short forms ("10.1", "167772161") and hex ("0x0a.0.0.1") too.
 *     IPv6 groups may have leading zeros ("0fd7::1"): RFC 4291 allows 1 to 4 hex digits.
 *   - Zone ids ("fe80::1%eth0", RFC 4007): refused by `parseIp` and `parseCidr`, so by the policy, the
 *     allowed IPs, IPAM, the sandbox's addresses and routes. The one place a zone is taken is a UDP
 *     endpoint, through `parseEndpointAddress`: WireGuard `Endpoint = [fe80::1%eth0]:51820` (the
 *     socket needs the interface to reach a link-local peer) and the sender a STUN response is
 *     encoded for (the attribute carries the address without the zone).
 *   - IPv4-mapped ("::ffff:1.2.3.4", RFC 4291 2.5.5.2): it names the IPv4 node 1.2.3.4. Wherever a
 *     range is configured (`parseCidr`: policy CIDRs, allowed IPs, IPAM pools, sandbox addresses),
 *     a mapped prefix of /96 or longer becomes the IPv4 prefix ("::ffff:10.0.0.0/120" is 10.0.0.0/24),
 *     so a policy, a route and an allocation agree on it. A single address from `parseIp` and an
 *     address read from a packet are kept as written (IPv6 words): a mapped address is never valid
 *     on the wire, so an IPv6 packet carrying one matches no IPv4 range and default-deny drops it.
 *   - Prefix lengths: decimal without leading zeros ("/08" refused), at most 32 or 128.
 *   - Anything else that is not inet_pton text (whitespace, brackets, "1::2::3", "1.2.3.4.") is refused.
 *
 * Formatting follows RFC 5952 section 4 (lowercase, no leading zeros, the longest run of two or more
 * zero groups compressed, the first on ties). Departure: mapped addresses are written in hex
 * ("::ffff:102:304"), not the mixed notation of section 5, so the text of an IPv6 packet's address
 * never reads as an IPv4 one.
 */

/**
 * An address as plain numbers. IPv4: w0 is the address as an unsigned 32-bit integer, w1..w3 are 0.
 * IPv6: w0..w3 hold the 128 bits, most significant word first. Every word is unsigned (>>> 0).
 * One object shape for both families keeps the evaluator's call sites monomorphic.
 */
export interface IpAddr {
  readonly family: 4 | 6;
  readonly w0: number;
  readonly w1: number;
  readonly w2: number;
  readonly w3: number;
}

/** A CIDR prefix in word form; `bits` is the prefix length (0..32 or 0..128). */
export interface Cidr {
  readonly addr: IpAddr;
  readonly bits: number;
}

/** A CIDR prefix in byte form (4 or 16 bytes, host bits zero), as the allowed-IPs trie stores it. */
export interface Prefix {
  ip: Uint8Array;
  bits: number;
}

/** An IPv4 address from its 32-bit value. */
export function ipv4(w0: number): IpAddr {
  return { family: 4, w0: w0 >>> 0, w1: 0, w2: 0, w3: 0 };
}

/** An IPv6 address from its four 32-bit words, most significant first. */
export function ipv6(w0: number, w1: number, w2: number, w3: number): IpAddr {
  return { family: 6, w0: w0 >>> 0, w1: w1 >>> 0, w2: w2 >>> 0, w3: w3 >>> 0 };
}

/** Number of bits in an address of `family`: 32 or 128. */
export function addrBits(family: 4 | 6): 32 | 128 {
  return family === 4 ? 32 : 128;
}

// ---------------------------------------------------------------------------------------------
// Text

const V4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const HEX_GROUP_RE = /^[0-9a-fA-F]{1,4}$/;

/** "a.b.c.d" -> 32-bit value; undefined for anything inet_pton(AF_INET) refuses (leading zeros included). */
function parseV4Word(s: string): number | undefined {
  const m = V4_RE.exec(s);
  if (!m) return undefined;
  let w = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i];
    if (part.length > 1 && part[0] === '0') return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    w = w * 256 + n;
  }
  return w >>> 0;
}

/** RFC 4291 2.2 text (with an optional trailing dotted quad) -> eight 16-bit groups. */
function parseV6Groups(s: string): number[] | undefined {
  if (s.length < 2 || s.length > 45) return undefined;
  const dbl = s.indexOf('::');
  if (dbl !== -1 && s.indexOf('::', dbl + 1) !== -1) return undefined;
  const parseGroups = (part: string, mayEndInV4: boolean): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (mayEndInV4 && i === items.length - 1 && it.includes('.')) {
        const v4 = parseV4Word(it);
        if (v4 === undefined) return undefined;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else {
        if (!HEX_GROUP_RE.test(it)) return undefined;
        out.push(parseInt(it, 16));
      }
    }
    return out;
  };
  if (dbl === -1) {
    const g = parseGroups(s, true);
    return g && g.length === 8 ? g : undefined;
  }
  const l = parseGroups(s.slice(0, dbl), false);
  const r = parseGroups(s.slice(dbl + 2), true);
  if (!l || !r || l.length + r.length > 7) return undefined;
  return [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
}

/**
 * Parse an address as inet_pton(3) does: "a.b.c.d" or RFC 4291 text IPv6. Returns undefined for
 * anything else; see the module comment for leading zeros, zones and IPv4-mapped text.
 */
export function parseIp(s: string): IpAddr | undefined {
  if (s.includes(':')) {
    const g = parseV6Groups(s);
    return g && ipv6((g[0] << 16) | g[1], (g[2] << 16) | g[3], (g[4] << 16) | g[5], (g[6] << 16) | g[7]);
  }
  const w = parseV4Word(s);
  return w === undefined ? undefined : ipv4(w);
}

/** `parseIp` in byte form: 4 or 16 bytes, or undefined. */
export function parseIpBytes(s: string): Uint8Array | undefined {
  const a = parseIp(s);
  return a && ipToBytes(a);
}

/**
 * The address of a UDP endpoint: an address as `parseIp` takes it, plus for IPv6 an optional zone
 * id ("fe80::1%eth0", RFC 4007 11.2) naming the interface. The only parser that takes a zone.
 * The zone is an interface name or index: 1 to 15 of [A-Za-z0-9_.-].
 */
export function parseEndpointAddress(s: string): { addr: IpAddr; zone?: string } | undefined {
  const pct = s.indexOf('%');
  if (pct === -1) {
    const addr = parseIp(s);
    return addr && { addr };
  }
  const zone = s.slice(pct + 1);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(zone)) return undefined;
  const addr = parseIp(s.slice(0, pct));
  return addr?.family === 6 ? { addr, zone } : undefined;
}

/** Canonical text form: dotted quad, or RFC 5952 section 4 for IPv6 (see the module comment). */
export function formatIp(a: IpAddr): string {
  if (a.family === 4) return `${a.w0 >>> 24}.${(a.w0 >>> 16) & 0xff}.${(a.w0 >>> 8) & 0xff}.${a.w0 & 0xff}`;
  const g = [a.w0, a.w1, a.w2, a.w3].flatMap((w) => [w >>> 16, w & 0xffff]);
  let bestAt = -1;
  let bestLen = 1; // RFC 5952 4.2.2: a single 0 group is not compressed
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (bestAt === -1) return hex(g);
  return `${hex(g.slice(0, bestAt))}::${hex(g.slice(bestAt + bestLen))}`;
}

/** `formatIp` of 4 or 16 bytes. Throws RangeError for any other length (programmer error). */
export function formatIpBytes(b: Uint8Array): string {
  if (b.length !== 4 && b.length !== 16) throw new RangeError(`an address is 4 or 16 bytes, not ${b.length}`);
  return formatIp(ipFromBytes(b, 0, b.length === 4 ? 4 : 6));
}

// ---------------------------------------------------------------------------------------------
// Bytes

/** Read an address from 4 (IPv4) or 16 (IPv6) bytes at `off`. The caller checks bounds. */
export function ipFromBytes(buf: Uint8Array, off: number, family: 4 | 6): IpAddr {
  const w0 = ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
  if (family === 4) return { family: 4, w0, w1: 0, w2: 0, w3: 0 };
  return {
    family: 6,
    w0,
    w1: ((buf[off + 4] << 24) | (buf[off + 5] << 16) | (buf[off + 6] << 8) | buf[off + 7]) >>> 0,
    w2: ((buf[off + 8] << 24) | (buf[off + 9] << 16) | (buf[off + 10] << 8) | buf[off + 11]) >>> 0,
    w3: ((buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15]) >>> 0,
  };
}

/** Write the address's 4 or 16 bytes at `off`. The caller checks bounds. */
export function writeIp(addr: IpAddr, buf: Uint8Array, off: number): void {
  const words = addr.family === 4 ? [addr.w0] : [addr.w0, addr.w1, addr.w2, addr.w3];
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    buf[off + i * 4] = w >>> 24;
    buf[off + i * 4 + 1] = (w >>> 16) & 0xff;
    buf[off + i * 4 + 2] = (w >>> 8) & 0xff;
    buf[off + i * 4 + 3] = w & 0xff;
  }
}

/** The address as a new array of 4 or 16 bytes, network order. */
export function ipToBytes(addr: IpAddr): Uint8Array {
  const out = new Uint8Array(addr.family === 4 ? 4 : 16);
  writeIp(addr, out, 0);
  return out;
}

/**
 * Source and destination address views (no copy) of an inner IPv4 (RFC 791) or IPv6 (RFC 8200)
 * packet, with the length its header claims in bytes; null if it is not one or is truncated.
 */
export function innerAddresses(pkt: Uint8Array): { version: 4 | 6; src: Uint8Array; dst: Uint8Array; length: number } | null {
  if (pkt.length < 1) return null;
  const v = pkt[0] >> 4;
  if (v === 4) {
    if (pkt.length < 20) return null;
    const len = (pkt[2] << 8) | pkt[3];
    if (len < 20 || len > pkt.length) return null;
    return { version: 4, src: pkt.subarray(12, 16), dst: pkt.subarray(16, 20), length: len };
  }
  if (v === 6) {
    if (pkt.length < 40) return null;
    const len = ((pkt[4] << 8) | pkt[5]) + 40;
    if (len > pkt.length) return null;
    return { version: 6, src: pkt.subarray(8, 24), dst: pkt.subarray(24, 40), length: len };
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Comparison, arithmetic

export function ipEquals(a: IpAddr, b: IpAddr): boolean {
  return a.family === b.family && a.w0 === b.w0 && a.w1 === b.w1 && a.w2 === b.w2 && a.w3 === b.w3;
}

/** The address as a bigint (IPAM arithmetic and policy compilation; never on the hot path). */
export function ipToBigInt(a: IpAddr): bigint {
  if (a.family === 4) return BigInt(a.w0);
  return (BigInt(a.w0) << 96n) | (BigInt(a.w1) << 64n) | (BigInt(a.w2) << 32n) | BigInt(a.w3);
}

/** The address of `family` whose value is `v` (taken modulo 2^32 or 2^128). */
export function ipFromBigInt(v: bigint, family: 4 | 6): IpAddr {
  const m = 0xffffffffn;
  if (family === 4) return ipv4(Number(v & m));
  return ipv6(Number((v >> 96n) & m), Number((v >> 64n) & m), Number((v >> 32n) & m), Number(v & m));
}

// ---------------------------------------------------------------------------------------------
// CIDR

/** Mask of the top `bits` bits of a 32-bit word whose first bit is bit number `wordStart` of the address. */
function wordMask(bits: number, wordStart: number): number {
  const n = Math.max(0, Math.min(32, bits - wordStart));
  return n === 0 ? 0 : (0xffffffff << (32 - n)) >>> 0;
}

/** The address with every bit after the first `bits` cleared (its network). */
export function maskAddr(a: IpAddr, bits: number): IpAddr {
  if (a.family === 4) return ipv4(a.w0 & wordMask(bits, 0));
  return ipv6(a.w0 & wordMask(bits, 0), a.w1 & wordMask(bits, 32), a.w2 & wordMask(bits, 64), a.w3 & wordMask(bits, 96));
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; reason: 'syntax' | 'length' | 'host-bits'; network?: string };

export interface CidrOptions {
  /**
   * Address bits past the prefix length: 'refuse' (default; the failure names the network),
   * 'mask' (cleared, as wg(8) does for AllowedIPs), 'keep' (an interface address such as 10.77.0.2/24).
   */
  hostBits?: 'refuse' | 'mask' | 'keep';
  /** A bare address: 'host' (default; /32 or /128) or 'refuse' (reason 'length'). */
  bare?: 'host' | 'refuse';
  /**
   * IPv4-mapped prefixes of /96 or longer: 'ipv4' (default; the IPv4 prefix, the module's answer)
   * or 'keep' (the IPv6 prefix as written; only for tables of the IPv6 address space itself).
   */
  mapped?: 'ipv4' | 'keep';
}

/** True for ::ffff:0:0/96 (an IPv4 address written as IPv6, RFC 4291 2.5.5.2). */
export function isIpv4Mapped(a: IpAddr): boolean {
  return a.family === 6 && a.w0 === 0 && a.w1 === 0 && a.w2 === 0xffff;
}

/** An IPv4-mapped prefix of /96 or longer as the IPv4 prefix it names; any other prefix unchanged. */
export function canonicalCidr(c: Cidr): Cidr {
  if (c.bits >= 96 && isIpv4Mapped(c.addr)) return { addr: ipv4(c.addr.w3), bits: c.bits - 96 };
  return c;
}

/**
 * Parse "addr/bits" (a bare address is a host prefix unless `opts.bare` is 'refuse'). Never throws;
 * the failure says which part is wrong. See `CidrOptions` for host bits and IPv4-mapped prefixes.
 */
export function parseCidr(s: string, opts: CidrOptions = {}): CidrParse {
  const slash = s.indexOf('/');
  const addr = parseIp(slash === -1 ? s : s.slice(0, slash));
  if (!addr) return { ok: false, reason: 'syntax' };
  const max = addrBits(addr.family);
  let bits: number = max;
  if (slash === -1) {
    if (opts.bare === 'refuse') return { ok: false, reason: 'length' };
  } else {
    const b = s.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(b)) return { ok: false, reason: 'length' };
    bits = Number(b);
    if (bits > max) return { ok: false, reason: 'length' };
  }
  const net = maskAddr(addr, bits);
  const hostBits = opts.hostBits ?? 'refuse';
  if (hostBits === 'refuse' && !ipEquals(net, addr)) {
    const c = opts.mapped === 'keep' ? { addr: net, bits } : canonicalCidr({ addr: net, bits });
    return { ok: false, reason: 'host-bits', network: formatCidr(c) };
  }
  const cidr = { addr: hostBits === 'mask' ? net : addr, bits };
  return { ok: true, cidr: opts.mapped === 'keep' ? cidr : canonicalCidr(cidr) };
}

/** "addr/bits" in canonical text. */
export function formatCidr(c: Cidr): string {
  return `${formatIp(c.addr)}/${c.bits}`;
}

/** Whether prefix `outer` contains every address of prefix `inner` (same family; host bits of `inner` ignored). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return outer.addr.family === inner.addr.family && outer.bits <= inner.bits && ipEquals(maskAddr(inner.addr, outer.bits), maskAddr(outer.addr, outer.bits));
}

/** Whether address `a` lies in prefix `c` (same family). */
export function cidrHas(c: Cidr, a: IpAddr): boolean {
  return cidrContains(c, { addr: a, bits: addrBits(a.family) });
}

/** `parseCidr` with host bits masked, in byte form (WireGuard AllowedIPs semantics); undefined if malformed. */
export function parsePrefix(s: string): Prefix | undefined {
  const p = parseCidr(s, { hostBits: 'mask' });
  return p.ok ? { ip: ipToBytes(p.cidr.addr), bits: p.cidr.bits } : undefined;
}

/** A byte-form prefix as "addr/bits". */
export function formatPrefix(p: Prefix): string {
  return `${formatIpBytes(p.ip)}/${p.bits}`;
}

// ---------------------------------------------------------------------------------------------
// IPv4 embedded in IPv6. Besides the mapped form, IPv6 prefixes embed IPv4 (NAT64 64:ff9b::/96,
// RFC 6052; 6to4 2002::/16, RFC 3056; the deprecated IPv4-compatible ::/96). The policy's
// over-broad check looks at the IPv4 space a prefix reaches through each of them.

interface Embedding {
  readonly name: string;
  /** The IPv6 prefix that embeds IPv4, and where the 32 IPv4 bits start. */
  readonly prefix: Cidr;
  readonly v4At: number;
}

const EMBEDDINGS: readonly Embedding[] = [
  { name: 'IPv4-mapped (::ffff:0:0/96)', prefix: { addr: ipv6(0, 0, 0xffff, 0), bits: 96 }, v4At: 96 },
  { name: 'IPv4-compatible (::/96)', prefix: { addr: ipv6(0, 0, 0, 0), bits: 96 }, v4At: 96 },
  { name: 'NAT64 (64:ff9b::/96)', prefix: { addr: ipv6(0x0064ff9b, 0, 0, 0), bits: 96 }, v4At: 96 },
  { name: 'NAT64 local-use (64:ff9b:1::/48)', prefix: { addr: ipv6(0x0064ff9b, 0x00010000, 0, 0), bits: 48 }, v4At: 48 },
  { name: '6to4 (2002::/16)', prefix: { addr: ipv6(0x20020000, 0, 0, 0), bits: 16 }, v4At: 16 },
];

/**
 * The widest IPv4 prefix an IPv6 prefix reaches through any embedding, as a prefix length
 * (0 = all of IPv4), with the embedding's name; undefined when it embeds no IPv4 range.
 * For an IPv4 prefix: its own length.
 */
export function ipv4Reach(c: Cidr): { bits: number; via: string } | undefined {
  if (c.addr.family === 4) return { bits: c.bits, via: 'IPv4' };
  let best: { bits: number; via: string } | undefined;
  for (const e of EMBEDDINGS) {
    let bits: number;
    if (cidrContains(c, e.prefix)) bits = 0; // the prefix holds the whole embedding
    else if (cidrContains(e.prefix, c)) bits = Math.min(32, c.bits - e.v4At);
    else continue;
    if (bits < 0) bits = 0;
    if (best === undefined || bits < best.bits) best = { bits, via: e.name };
  }
  return best;
}

/** The IPv4 address an IPv6 address carries in an embedding (mapped, NAT64, 6to4), if any. */
export function embeddedIpv4(a: IpAddr): IpAddr | undefined {
  if (a.family !== 6) return undefined;
  if (isIpv4Mapped(a) || (a.w0 === 0x0064ff9b && a.w1 === 0 && a.w2 === 0)) return ipv4(a.w3);
  if (a.w0 >>> 16 === 0x2002) return ipv4(((a.w0 & 0xffff) * 0x10000 + (a.w1 >>> 16)) >>> 0);
  return undefined;
}
