/**
 * The sandbox's DNS resolver (RFC 1035), answered by the launcher over UDP on the TUN. Pure:
 * message bytes in, message bytes or an "ask upstream" outcome out.
 *
 *   <name>.<namespace>.lattice  A/AAAA from the overlay directory (authoritative), else NXDOMAIN
 *   a name a domain rule allows  -> { kind: 'upstream' }: the I/O layer resolves it (node:dns),
 *                                   records the addresses in DnsAllowances with the TTL, and
 *                                   answers with buildAddressResponse()
 *   anything else                -> NXDOMAIN (outcome `notAllowedNxDomain`; audited as dns.refused)
 *
 * Rcodes (RFC 1035 4.1.1, RFC 2308): NOTIMP for opcodes other than QUERY; REFUSED for classes
 * other than IN/ANY; FORMERR for a query whose header reads but whose question does not; NXDOMAIN
 * for names that do not exist (or that no rule allows: the agent must fail fast, not retry);
 * NOERROR with no answers (NODATA) for a name that exists without records of the asked type
 * (e.g. AAAA for an IPv4-only host: musl's getaddrinfo fails on anything else); SERVFAIL when the
 * upstream fails or the lookup bound (DnsLimiter) is reached. No SOA is attached to negative
 * answers, so resolvers do not cache them (RFC 2308 5).
 *
 * Queries are hostile input: compression loops, truncation and wrong section counts are dropped
 * (or FORMERR) and counted; responses are never answered. Responses never carry EDNS and stay
 * within 512 bytes (surplus addresses are left out rather than setting TC: the pump refuses DNS
 * over TCP with a reset, so a TC answer could only fail).
 */
import { type IpAddr, ipFromBytes, writeIp } from '../net/addr.js';
import { normalizeName } from '../policy/domains.js';
import { type ParsedPacket, buildUdp } from './packet.js';
import { ParseStats } from './stats.js';

export const DnsType = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, OPT: 41, HTTPS: 65, ANY: 255 } as const;
export const DnsClass = { IN: 1, ANY: 255 } as const;
export const Rcode = { noError: 0, formErr: 1, servFail: 2, nxDomain: 3, notImp: 4, refused: 5 } as const;
export type Rcode = (typeof Rcode)[keyof typeof Rcode];

export const DNS_PORT = 53;
/** RFC 1035 4.2.1: the most a plain UDP answer may carry. */
export const MAX_UDP_MESSAGE = 512;
const HEADER = 12;
const MAX_NAME = 255;
const MAX_POINTER_JUMPS = 16;

export const DnsDropReason = {
  short: 'short',
  isResponse: 'is-response',
  badCounts: 'bad-counts',
  badName: 'bad-name',
  pointerLoop: 'pointer-loop',
  truncated: 'truncated',
  badOpt: 'bad-opt',
} as const;
export type DnsDropReason = (typeof DnsDropReason)[keyof typeof DnsDropReason];

/** Counters of parseQuery/parseResponse: messages parsed, dropped, and why (DnsDropReason). */
export type DnsStats = ParseStats<DnsDropReason>;

export interface DnsQuestion {
  /** Lowercase, no trailing dot (the root is ""). */
  readonly name: string;
  /** Labels as sent (case preserved), echoed in the answer's question section. */
  readonly labels: readonly string[];
  readonly type: number;
  readonly class: number;
}

export interface DnsQuery {
  readonly id: number;
  readonly opcode: number;
  readonly rd: boolean;
  readonly question: DnsQuestion;
}

type NameRead = { labels: string[]; next: number } | { error: DnsDropReason };

/**
 * Read a possibly compressed name at `off`. Pointers must point strictly backwards (before the
 * current read position), which rules out loops; jumps and total length are capped as well.
 */
function readName(b: Uint8Array, off: number): NameRead {
  const labels: string[] = [];
  let pos = off;
  let next = -1;
  let jumps = 0;
  let total = 1;
  for (;;) {
    if (pos >= b.length) return { error: DnsDropReason.truncated };
    const len = b[pos];
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= b.length) return { error: DnsDropReason.truncated };
      const target = ((len & 0x3f) << 8) | b[pos + 1];
      if (next === -1) next = pos + 2;
      if (target < HEADER) return { error: DnsDropReason.badName }; // names never live in the header
      if (target >= pos || ++jumps > MAX_POINTER_JUMPS) return { error: DnsDropReason.pointerLoop };
      pos = target;
      continue;
    }
    if ((len & 0xc0) !== 0) return { error: DnsDropReason.badName }; // 0x40 / 0x80: obsolete label types
    if (len === 0) return { labels, next: next === -1 ? pos + 1 : next };
    if (pos + 1 + len > b.length) return { error: DnsDropReason.truncated };
    total += len + 1;
    if (total > MAX_NAME) return { error: DnsDropReason.badName };
    let s = '';
    for (let i = pos + 1; i <= pos + len; i++) {
      const c = b[i];
      // Printable ASCII except "." inside a label: anything else cannot be one of our names.
      if (c <= 0x20 || c >= 0x7f || c === 0x2e) return { error: DnsDropReason.badName };
      s += String.fromCharCode(c);
    }
    labels.push(s);
    pos += 1 + len;
  }
}

const u16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];

/** Parse a query message. Returns null (counted) for anything that is not one well-formed question. */
export function parseQuery(b: Uint8Array, stats?: DnsStats): DnsQuery | null {
  const drop = (r: DnsDropReason) => (stats ? stats.drop(r) : null);
  if (b.length < HEADER) return drop(DnsDropReason.short);
  if ((b[2] & 0x80) !== 0) return drop(DnsDropReason.isResponse); // never answer a response (reflection loops)
  const qd = u16(b, 4);
  const an = u16(b, 6);
  const ns = u16(b, 8);
  const ar = u16(b, 10);
  if (qd !== 1 || an !== 0 || ns !== 0 || ar > 1) return drop(DnsDropReason.badCounts);
  const name = readName(b, HEADER);
  if ('error' in name) return drop(name.error);
  let off = name.next;
  if (off + 4 > b.length) return drop(DnsDropReason.truncated);
  const type = u16(b, off);
  const klass = u16(b, off + 2);
  off += 4;
  if (ar === 1) {
    // The one additional record a query may carry is EDNS OPT (RFC 6891): root name, type 41.
    if (off + 11 > b.length || b[off] !== 0 || u16(b, off + 1) !== DnsType.OPT) return drop(DnsDropReason.badOpt);
    if (off + 11 + u16(b, off + 9) > b.length) return drop(DnsDropReason.truncated);
  }
  if (stats) stats.parsed++;
  return {
    id: u16(b, 0),
    opcode: (b[2] >> 3) & 0x0f,
    rd: (b[2] & 0x01) !== 0,
    question: { name: name.labels.join('.').toLowerCase(), labels: name.labels, type, class: klass },
  };
}

export interface AddressAnswer {
  readonly addr: IpAddr;
  readonly ttlSec: number;
}

/**
 * A response to `q`: id and question echoed, QR set, RD copied, RA set, AA for our own zone.
 * A/AAAA records for `answers` of the question's family (ANY takes both), as many as fit in 512 bytes.
 */
export function buildResponse(q: DnsQuery, rcode: Rcode, answers: readonly AddressAnswer[] = [], authoritative = false): Uint8Array {
  const qname = encodeName(q.question.labels);
  const want = (a: AddressAnswer) =>
    q.question.type === DnsType.ANY || (a.addr.family === 4 ? q.question.type === DnsType.A : q.question.type === DnsType.AAAA);
  const chosen: AddressAnswer[] = [];
  let size = HEADER + qname.length + 4;
  for (const a of answers) {
    if (!want(a)) continue;
    const rr = 2 + 10 + (a.addr.family === 4 ? 4 : 16);
    if (size + rr > MAX_UDP_MESSAGE) break;
    size += rr;
    chosen.push(a);
  }
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, q.id);
  b[2] = 0x80 | ((q.opcode & 0x0f) << 3) | (authoritative ? 0x04 : 0) | (q.rd ? 0x01 : 0);
  b[3] = 0x80 | (rcode & 0x0f); // RA: we resolve (within policy) on the sandbox's behalf
  dv.setUint16(4, 1);
  dv.setUint16(6, chosen.length);
  b.set(qname, HEADER);
  let off = HEADER + qname.length;
  dv.setUint16(off, q.question.type);
  dv.setUint16(off + 2, q.question.class);
  off += 4;
  for (const a of chosen) {
    dv.setUint16(off, 0xc000 | HEADER); // pointer to the question's name
    dv.setUint16(off + 2, a.addr.family === 4 ? DnsType.A : DnsType.AAAA);
    dv.setUint16(off + 4, DnsClass.IN);
    dv.setUint32(off + 6, Math.max(0, Math.min(0x7fffffff, Math.floor(a.ttlSec))));
    const len = a.addr.family === 4 ? 4 : 16;
    dv.setUint16(off + 10, len);
    writeIp(a.addr, b, off + 12);
    off += 12 + len;
  }
  return b;
}

/** The answer to an upstream-resolved name: the addresses with the (allowance-clamped) TTL. */
export function buildAddressResponse(q: DnsQuery, addrs: readonly IpAddr[], ttlSec: number): Uint8Array {
  return buildResponse(
    q,
    Rcode.noError,
    addrs.map((addr) => ({ addr, ttlSec })),
  );
}

function encodeName(labels: readonly string[]): Uint8Array {
  const out = new Uint8Array(labels.reduce((n, l) => n + l.length + 1, 1));
  let off = 0;
  for (const l of labels) {
    out[off++] = l.length;
    for (let i = 0; i < l.length; i++) out[off++] = l.charCodeAt(i);
  }
  out[off] = 0;
  return out;
}

/** Encode a query (for tests and for an I/O layer that forwards raw packets upstream). */
export function buildQuery(id: number, name: string, type: number, rd = true): Uint8Array {
  const labels = name.replace(/\.$/, '').split('.').filter((l) => l.length > 0);
  const qname = encodeName(labels);
  const b = new Uint8Array(HEADER + qname.length + 4);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, id);
  b[2] = rd ? 0x01 : 0;
  dv.setUint16(4, 1);
  b.set(qname, HEADER);
  dv.setUint16(HEADER + qname.length, type);
  dv.setUint16(HEADER + qname.length + 2, DnsClass.IN);
  return b;
}

export interface DnsRecord {
  readonly name: string;
  readonly type: number;
  readonly class: number;
  readonly ttlSec: number;
  /** For A and AAAA records. */
  readonly addr?: IpAddr;
}

export interface DnsResponse {
  readonly id: number;
  readonly rcode: number;
  readonly authoritative: boolean;
  readonly truncated: boolean;
  readonly question?: DnsQuestion;
  readonly answers: readonly DnsRecord[];
}

/**
 * Parse a response (an upstream's raw answer, or ours in tests): the answer section's records,
 * A/AAAA decoded. Returns null for anything malformed.
 */
export function parseResponse(b: Uint8Array, stats?: DnsStats): DnsResponse | null {
  const drop = (r: DnsDropReason) => (stats ? stats.drop(r) : null);
  if (b.length < HEADER) return drop(DnsDropReason.short);
  if ((b[2] & 0x80) === 0) return drop(DnsDropReason.badCounts);
  const qd = u16(b, 4);
  const an = u16(b, 6);
  if (qd > 1) return drop(DnsDropReason.badCounts);
  let off = HEADER;
  let question: DnsQuestion | undefined;
  if (qd === 1) {
    const n = readName(b, off);
    if ('error' in n) return drop(n.error);
    if (n.next + 4 > b.length) return drop(DnsDropReason.truncated);
    question = { name: n.labels.join('.').toLowerCase(), labels: n.labels, type: u16(b, n.next), class: u16(b, n.next + 2) };
    off = n.next + 4;
  }
  const answers: DnsRecord[] = [];
  for (let i = 0; i < an; i++) {
    const n = readName(b, off);
    if ('error' in n) return drop(n.error);
    off = n.next;
    if (off + 10 > b.length) return drop(DnsDropReason.truncated);
    const type = u16(b, off);
    const klass = u16(b, off + 2);
    const ttl = ((b[off + 4] << 24) | (b[off + 5] << 16) | (b[off + 6] << 8) | b[off + 7]) >>> 0;
    const rdlen = u16(b, off + 8);
    off += 10;
    if (off + rdlen > b.length) return drop(DnsDropReason.truncated);
    let addr: IpAddr | undefined;
    if (type === DnsType.A && rdlen === 4) addr = ipFromBytes(b, off, 4);
    else if (type === DnsType.AAAA && rdlen === 16) addr = ipFromBytes(b, off, 6);
    // RFC 2181 8: a TTL with the top bit set is treated as zero.
    answers.push({ name: n.labels.join('.').toLowerCase(), type, class: klass, ttlSec: ttl > 0x7fffffff ? 0 : ttl, ...(addr && { addr }) });
    off += rdlen;
  }
  return { id: u16(b, 0), rcode: b[3] & 0x0f, authoritative: (b[2] & 0x04) !== 0, truncated: (b[2] & 0x02) !== 0, ...(question && { question }), answers };
}

/** Overlay names and their addresses. Names are lowercase, without a trailing dot. */
export interface DnsDirectory {
  lookup(name: string): { readonly v4: readonly IpAddr[]; readonly v6: readonly IpAddr[] } | undefined;
}

/** A directory from a map name -> addresses (the lead builds it from the peer list). */
export class MapDirectory implements DnsDirectory {
  private readonly map = new Map<string, { v4: IpAddr[]; v6: IpAddr[] }>();
  constructor(entries: Iterable<readonly [string, readonly IpAddr[]]> = []) {
    for (const [name, addrs] of entries) this.set(name, addrs);
  }
  /** Replace `name`'s addresses (both families). */
  set(name: string, addrs: readonly IpAddr[]): void {
    this.map.set(normalizeName(name), { v4: addrs.filter((a) => a.family === 4), v6: addrs.filter((a) => a.family === 6) });
  }
  /** Forget `name` (it then answers NXDOMAIN). */
  delete(name: string): void {
    this.map.delete(normalizeName(name));
  }
  /** The addresses of a normalised name, by family; undefined when unknown. */
  lookup(name: string) {
    return this.map.get(name);
  }
}

/**
 * What the responder does with a message, named by what goes back (rcodes: RFC 1035 4.1.1).
 * `notAllowedNxDomain` answers NXDOMAIN (rcode 3), not REFUSED (rcode 5): the agent must fail fast
 * as for a missing name instead of trying another resolver. REFUSED is only answered (inside
 * `answer`) for classes other than IN/ANY.
 */
export const DnsOutcomeKind = { answer: 'answer', upstream: 'upstream', notAllowedNxDomain: 'notAllowedNxDomain', formErr: 'formErr', drop: 'drop' } as const;

export type DnsOutcome =
  /** Answered here (overlay name, NXDOMAIN inside our zone, NODATA, NOTIMP): send `response`. */
  | { readonly kind: 'answer'; readonly query: DnsQuery; readonly rcode: Rcode; readonly response: Uint8Array; readonly addresses: readonly IpAddr[] }
  /** A domain rule allows the name: resolve upstream, record allowances, answer with buildAddressResponse. */
  | { readonly kind: 'upstream'; readonly query: DnsQuery }
  /** No rule allows the name: `response` is NXDOMAIN. Worth an audit line (`dns.refused`). */
  | { readonly kind: 'notAllowedNxDomain'; readonly query: DnsQuery; readonly response: Uint8Array }
  /** A query whose header reads but whose question does not: `response` is FORMERR with the id echoed. */
  | { readonly kind: 'formErr'; readonly response: Uint8Array }
  /** Malformed beyond answering (short, or a response): send nothing. */
  | { readonly kind: 'drop' };

export interface DnsResponderOptions {
  readonly directory: DnsDirectory;
  /** Whether a name outside the overlay zone may be resolved upstream, e.g. (n) => domainAllowed(policy, n, now()). */
  readonly upstreamAllowed: (name: string) => boolean;
  /** The overlay zone (default "lattice"). */
  readonly zone?: string;
  /** TTL of overlay answers (default 30 s: peers can move). */
  readonly localTtlSec?: number;
  readonly stats?: DnsStats;
}

/** The sandbox resolver's decision for one query (see the comment at the top of this file). */
export class DnsResponder {
  readonly stats: DnsStats;
  private readonly zone: string;
  private readonly localTtlSec: number;

  constructor(private readonly opts: DnsResponderOptions) {
    this.stats = opts.stats ?? new ParseStats<DnsDropReason>();
    this.zone = normalizeName(opts.zone ?? 'lattice');
    this.localTtlSec = opts.localTtlSec ?? 30;
  }

  /** Decide one UDP DNS message (hostile input: never throws). */
  handle(message: Uint8Array): DnsOutcome {
    const q = parseQuery(message, this.stats);
    if (q === null) {
      // RFC 1035 4.1.1: format error, when there is a query header to answer (never answer a response).
      if (message.length < HEADER || (message[2] & 0x80) !== 0) return { kind: DnsOutcomeKind.drop };
      return { kind: DnsOutcomeKind.formErr, response: buildHeaderOnly(message, Rcode.formErr) };
    }
    const answer = (rcode: Rcode, addresses: readonly IpAddr[] = [], aa = false): DnsOutcome => ({
      kind: DnsOutcomeKind.answer,
      query: q,
      rcode,
      addresses,
      response: buildResponse(
        q,
        rcode,
        addresses.map((addr) => ({ addr, ttlSec: this.localTtlSec })),
        aa,
      ),
    });
    if (q.opcode !== 0) return answer(Rcode.notImp);
    const { name, type } = q.question;
    if (q.question.class !== DnsClass.IN && q.question.class !== DnsClass.ANY) return answer(Rcode.refused);
    const wantsAddress = type === DnsType.A || type === DnsType.AAAA || type === DnsType.ANY;

    if (name === this.zone || name.endsWith(`.${this.zone}`)) {
      const entry = this.opts.directory.lookup(name);
      if (entry === undefined) return answer(Rcode.nxDomain, [], true);
      if (!wantsAddress) return answer(Rcode.noError, [], true); // NODATA: the name exists
      return answer(Rcode.noError, [...entry.v4, ...entry.v6], true);
    }
    if (name !== '' && this.opts.upstreamAllowed(name)) {
      // Only addresses are looked up upstream; other types get NODATA so nothing else leaks out.
      if (!wantsAddress || type === DnsType.ANY) return answer(Rcode.noError);
      return { kind: DnsOutcomeKind.upstream, query: q };
    }
    return { kind: DnsOutcomeKind.notAllowedNxDomain, query: q, response: buildResponse(q, Rcode.nxDomain) };
  }
}

/** Wrap a DNS response in the UDP/IP packet answering the query packet `p` (addresses and ports swapped). */
export function buildDnsReplyPacket(p: ParsedPacket, response: Uint8Array): Uint8Array {
  return buildUdp({ src: p.dst, dst: p.src, srcPort: p.dstPort, dstPort: p.srcPort, payload: response });
}

/** A response with no sections: id, opcode and RD echoed from the query header, `rcode` set. */
function buildHeaderOnly(query: Uint8Array, rcode: Rcode): Uint8Array {
  const b = new Uint8Array(HEADER);
  b[0] = query[0];
  b[1] = query[1];
  b[2] = 0x80 | (query[2] & 0x79); // QR, opcode and RD copied; AA and TC clear
  b[3] = 0x80 | (rcode & 0x0f);
  return b;
}

/**
 * What an upstream lookup error means for the agent (node:dns error codes): ENODATA -> NOERROR
 * with no answers (the name exists, not with this type); ENOTFOUND -> NXDOMAIN; anything else
 * (ESERVFAIL, ETIMEOUT, EREFUSED, ECONNREFUSED, ...) -> SERVFAIL. `reason` is for the audit line.
 */
export function upstreamFailure(err: unknown): { rcode: Rcode; reason: string } {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  if (code === 'ENODATA') return { rcode: Rcode.noError, reason: 'no records of this type upstream' };
  if (code === 'ENOTFOUND') return { rcode: Rcode.nxDomain, reason: 'upstream: no such name (NXDOMAIN)' };
  return { rcode: Rcode.servFail, reason: `upstream resolution failed${code ? ` (${code})` : ''}` };
}

export interface DnsLimits {
  /** Upstream lookups in flight at once (default 64). */
  maxInFlight: number;
  /** Sustained lookups per second (default 50). */
  perSecond: number;
  /** Lookups allowed in a burst above the rate (default 100). */
  burst: number;
}

export const DefaultDnsLimits: Readonly<DnsLimits> = Object.freeze({ maxInFlight: 64, perSecond: 50, burst: 100 });

/**
 * Bounds a sandbox's upstream DNS lookups: a token bucket for the rate and a count of lookups in
 * flight. Pure: `now` (monotonic ms, Clock.monotonic) in. tryStart() before a lookup; finish() when it settles.
 */
export class DnsLimiter {
  readonly limits: DnsLimits;
  private tokens: number;
  private last: number;
  private inFlightCount = 0;
  readonly counters = { started: 0, throttledRate: 0, throttledInFlight: 0 };

  constructor(limits: Partial<DnsLimits> = {}, now = 0) {
    this.limits = { ...DefaultDnsLimits, ...limits };
    this.tokens = this.limits.burst;
    this.last = now;
  }

  get inFlight(): number {
    return this.inFlightCount;
  }

  /** Take a slot for one upstream lookup at `now` (monotonic ms); false (counted) when over either bound. */
  tryStart(now: number): boolean {
    this.tokens = Math.min(this.limits.burst, this.tokens + (Math.max(0, now - this.last) * this.limits.perSecond) / 1000);
    this.last = Math.max(this.last, now);
    if (this.inFlightCount >= this.limits.maxInFlight) {
      this.counters.throttledInFlight++;
      return false;
    }
    if (this.tokens < 1) {
      this.counters.throttledRate++;
      return false;
    }
    this.tokens -= 1;
    this.inFlightCount++;
    this.counters.started++;
    return true;
  }

  /** A lookup started by tryStart() settled. */
  finish(): void {
    if (this.inFlightCount > 0) this.inFlightCount--;
  }
}
