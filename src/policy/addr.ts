/**
 * IP addresses as plain numbers, so the hot path compares integers and never parses strings.
 * IPv4: w0 holds the address as an unsigned 32-bit integer, w1..w3 are 0.
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

export function ipv4(w0: number): IpAddr {
  return { family: 4, w0: w0 >>> 0, w1: 0, w2: 0, w3: 0 };
}

export function ipv6(w0: number, w1: number, w2: number, w3: number): IpAddr {
  return { family: 6, w0: w0 >>> 0, w1: w1 >>> 0, w2: w2 >>> 0, w3: w3 >>> 0 };
}

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

/** Write the address's 4 or 16 bytes at `off`. */
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

export function ipToBytes(addr: IpAddr): Uint8Array {
  const out = new Uint8Array(addr.family === 4 ? 4 : 16);
  writeIp(addr, out, 0);
  return out;
}

export function ipEquals(a: IpAddr, b: IpAddr): boolean {
  return a.family === b.family && a.w0 === b.w0 && a.w1 === b.w1 && a.w2 === b.w2 && a.w3 === b.w3;
}

const V4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function parseV4Words(s: string): number | undefined {
  const m = V4_RE.exec(s);
  if (!m) return undefined;
  let w = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i];
    // Leading zeros are rejected: "010" is octal to some parsers and decimal to others.
    if (part.length > 1 && part[0] === '0') return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    w = w * 256 + n;
  }
  return w >>> 0;
}

function parseV6Words(s: string): [number, number, number, number] | undefined {
  if (s.length < 2 || s.length > 45) return undefined;
  // An embedded dotted quad may end the address (::ffff:1.2.3.4): rewrite it as two hex groups.
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) !== -1) {
    const v4 = parseV4Words(s.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    s = `${s.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const dbl = s.indexOf('::');
  if (dbl !== -1 && s.indexOf('::', dbl + 1) !== -1) return undefined;
  const parseGroups = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  let groups: number[];
  if (dbl === -1) {
    const g = parseGroups(s);
    if (!g || g.length !== 8) return undefined;
    groups = g;
  } else {
    const l = parseGroups(s.slice(0, dbl));
    const r = parseGroups(s.slice(dbl + 2));
    if (!l || !r || l.length + r.length > 7) return undefined;
    groups = [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  }
  return [
    ((groups[0] << 16) | groups[1]) >>> 0,
    ((groups[2] << 16) | groups[3]) >>> 0,
    ((groups[4] << 16) | groups[5]) >>> 0,
    ((groups[6] << 16) | groups[7]) >>> 0,
  ];
}

/** Parse "a.b.c.d" or an RFC 4291 text IPv6 address. Returns undefined for anything else (no zones). */
export function parseIp(s: string): IpAddr | undefined {
  if (s.includes(':')) {
    const w = parseV6Words(s);
    return w && ipv6(w[0], w[1], w[2], w[3]);
  }
  const w = parseV4Words(s);
  return w === undefined ? undefined : ipv4(w);
}

/** Canonical text form (RFC 5952 for IPv6: lowercase, longest zero run compressed). */
export function formatIp(a: IpAddr): string {
  if (a.family === 4) return `${a.w0 >>> 24}.${(a.w0 >>> 16) & 0xff}.${(a.w0 >>> 8) & 0xff}.${a.w0 & 0xff}`;
  const g = [a.w0, a.w1, a.w2, a.w3].flatMap((w) => [w >>> 16, w & 0xffff]);
  let bestAt = -1;
  let bestLen = 1; // RFC 5952: a single 0 group is not compressed
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

/** A CIDR prefix. `bits` is the prefix length. */
export interface Cidr {
  readonly addr: IpAddr;
  readonly bits: number;
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; reason: 'syntax' | 'length' | 'host-bits'; network?: string };

/** Mask of the top `bits` bits of a 32-bit word whose first bit is bit number `wordStart` of the address. */
function wordMask(bits: number, wordStart: number): number {
  const n = Math.max(0, Math.min(32, bits - wordStart));
  return n === 0 ? 0 : (0xffffffff << (32 - n)) >>> 0;
}

export function maskAddr(a: IpAddr, bits: number): IpAddr {
  if (a.family === 4) return ipv4(a.w0 & wordMask(bits, 0));
  return ipv6(a.w0 & wordMask(bits, 0), a.w1 & wordMask(bits, 32), a.w2 & wordMask(bits, 64), a.w3 & wordMask(bits, 96));
}

/** Parse "addr/bits"; a bare address is a host prefix (/32 or /128). Host bits set is an error. */
export function parseCidr(s: string): CidrParse {
  const slash = s.indexOf('/');
  const addr = parseIp(slash === -1 ? s : s.slice(0, slash));
  if (!addr) return { ok: false, reason: 'syntax' };
  const max = addr.family === 4 ? 32 : 128;
  let bits = max;
  if (slash !== -1) {
    const b = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(b)) return { ok: false, reason: 'length' };
    bits = Number(b);
    if (bits > max) return { ok: false, reason: 'length' };
  }
  const net = maskAddr(addr, bits);
  if (!ipEquals(net, addr)) return { ok: false, reason: 'host-bits', network: `${formatIp(net)}/${bits}` };
  return { ok: true, cidr: { addr, bits } };
}

/** The address as a bigint (compile time only; never on the hot path). */
export function ipToBigInt(a: IpAddr): bigint {
  if (a.family === 4) return BigInt(a.w0);
  return (BigInt(a.w0) << 96n) | (BigInt(a.w1) << 64n) | (BigInt(a.w2) << 32n) | BigInt(a.w3);
}

export function ipFromBigInt(v: bigint, family: 4 | 6): IpAddr {
  if (family === 4) return ipv4(Number(v & 0xffffffffn));
  const m = 0xffffffffn;
  return ipv6(Number((v >> 96n) & m), Number((v >> 64n) & m), Number((v >> 32n) & m), Number(v & m));
}

// ---------------------------------------------------------------------------------------------
// One address, several spellings. An IPv4 address can be written as IPv6 (RFC 4291 2.5.5.2
// "::ffff:a.b.c.d"), and IPv6 prefixes embed IPv4 (NAT64 64:ff9b::/96, RFC 6052; 6to4 2002::/16,
// RFC 3056; the deprecated IPv4-compatible ::/96). Packets never carry the mapped form on the
// wire, so the policy stores it as IPv4; the over-broad check looks at the IPv4 space a prefix
// reaches through every embedding.

/** True for ::ffff:0:0/96 (an IPv4 address written as IPv6). */
export function isIpv4Mapped(a: IpAddr): boolean {
  return a.family === 6 && a.w0 === 0 && a.w1 === 0 && a.w2 === 0xffff;
}

/** The one form the policy keeps: an IPv4-mapped prefix of /96 or longer becomes the IPv4 prefix. */
export function canonicalCidr(c: Cidr): Cidr {
  if (c.bits >= 96 && isIpv4Mapped(c.addr)) return { addr: ipv4(c.addr.w3), bits: c.bits - 96 };
  return c;
}

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

/** Whether prefix `outer` contains every address of prefix `inner` (same family). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return outer.addr.family === inner.addr.family && outer.bits <= inner.bits && ipEquals(maskAddr(inner.addr, outer.bits), outer.addr);
}

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
