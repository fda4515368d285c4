import { describe, expect, it } from 'vitest';
import {
  DnsDropReason,
  DnsResponder,
  DnsStats,
  DnsType,
  MapDirectory,
  Rcode,
  buildAddressResponse,
  buildDnsReplyPacket,
  buildQuery,
  buildResponse,
  parseQuery,
  parseResponse,
} from '../../src/dataplane/dns.js';
import { buildUdp, parsePacket, transportPayload } from '../../src/dataplane/packet.js';
import { DnsAllowances, compilePolicy, domainAllowed, evaluate, formatIp, parseIp } from '../../src/policy/index.js';

const ip = (s: string) => parseIp(s)!;
const hex = (s: string) => Uint8Array.from(s.replace(/\s+/g, '').match(/../g)!.map((h) => parseInt(h, 16)));
const NOW = Date.parse('2030-01-01T00:00:00Z');

const policy = compilePolicy({ version: 1, egress: [{ id: 'api', action: 'allow', domains: ['api.example.com', '*.pkg.example.org'], ports: [443], protocol: 'tcp' }] });
const directory = new MapDirectory([
  ['web.default.lattice', [ip('10.77.0.1'), ip('fd77::1')]],
  ['db.team-a.lattice', [ip('10.77.0.5')]],
]);
const responder = () => new DnsResponder({ directory, upstreamAllowed: (n) => domainAllowed(policy, n, NOW) });

describe('overlay names', () => {
  it.each<[string, number, number, string[]]>([
    ['web.default.lattice', DnsType.A, Rcode.noError, ['10.77.0.1']],
    ['WEB.Default.Lattice.', DnsType.A, Rcode.noError, ['10.77.0.1']],
    ['web.default.lattice', DnsType.AAAA, Rcode.noError, ['fd77::1']],
    ['db.team-a.lattice', DnsType.AAAA, Rcode.noError, []],
    ['web.default.lattice', DnsType.MX, Rcode.noError, []],
    ['nope.default.lattice', DnsType.A, Rcode.nxDomain, []],
    ['lattice', DnsType.A, Rcode.nxDomain, []],
  ])('%s type %i -> rcode %i %j', (name, type, rcode, addrs) => {
    const query = buildQuery(0x1234, name, type);
    const out = responder().handle(query);
    expect(out.kind).toBe('answer');
    if (out.kind !== 'answer') return;
    const r = parseResponse(out.response)!;
    expect(r).toMatchObject({ id: 0x1234, rcode, authoritative: true, truncated: false });
    expect(r.question?.labels.join('.')).toBe(name.replace(/\.$/, '')); // case echoed as asked
    expect(r.answers.map((a) => formatIp(a.addr!))).toEqual(addrs);
    for (const a of r.answers) expect(a.ttlSec).toBe(30);
    expect(out.response[2] & 0x81).toBe(0x81); // QR and RD
    expect(out.response[3] & 0x80).toBe(0x80); // RA
  });
});

describe('names outside the overlay', () => {
  it('a name a domain rule allows goes upstream; the answer and allowances follow', () => {
    const out = responder().handle(buildQuery(7, 'api.example.com', DnsType.A));
    expect(out.kind).toBe('upstream');
    if (out.kind !== 'upstream') return;
    expect(out.query.question.name).toBe('api.example.com');
    // what the I/O layer does with node:dns's answer
    const allowances = new DnsAllowances();
    const addrs = [ip('198.51.100.7'), ip('198.51.100.8')];
    const ttl = allowances.record(out.query.question.name, addrs, 120, NOW);
    const r = parseResponse(buildAddressResponse(out.query, addrs, ttl))!;
    expect(r).toMatchObject({ id: 7, rcode: 0, authoritative: false });
    expect(r.answers.map((a) => [a.name, formatIp(a.addr!), a.ttlSec])).toEqual([
      ['api.example.com', '198.51.100.7', 120],
      ['api.example.com', '198.51.100.8', 120],
    ]);
    expect(evaluate(policy, { direction: 'egress', protocol: 6, remote: addrs[1], dstPort: 443 }, NOW, allowances).ruleId).toBe('api');
  });
  it('wildcards go upstream too, other record types get NODATA', () => {
    expect(responder().handle(buildQuery(1, 'deb.pkg.example.org', DnsType.AAAA)).kind).toBe('upstream');
    const txt = responder().handle(buildQuery(1, 'api.example.com', DnsType.TXT));
    expect(txt.kind).toBe('answer');
    if (txt.kind === 'answer') expect(parseResponse(txt.response)).toMatchObject({ rcode: 0, answers: [] });
  });
  it('other names are refused with NXDOMAIN', () => {
    for (const name of ['example.com', 'evil.example.net', 'pkg.example.org', '']) {
      const out = responder().handle(buildQuery(9, name, DnsType.A));
      expect(out.kind).toBe('refused');
      if (out.kind === 'refused') expect(parseResponse(out.response)).toMatchObject({ id: 9, rcode: Rcode.nxDomain, answers: [] });
    }
  });
  it('non-query opcodes get NOTIMP, CHAOS class gets REFUSED', () => {
    const q = buildQuery(3, 'web.default.lattice', DnsType.A);
    q[2] |= 2 << 3; // STATUS
    const out = responder().handle(q);
    expect(out.kind === 'answer' && out.rcode).toBe(Rcode.notImp);
    const ch = buildQuery(3, 'version.bind', DnsType.TXT);
    ch[ch.length - 1] = 3;
    const o2 = responder().handle(ch);
    expect(o2.kind === 'answer' && o2.rcode).toBe(Rcode.refused);
  });
});

describe('hostile queries are dropped and counted', () => {
  const q = buildQuery(1, 'web.default.lattice', DnsType.A);
  const mut = (f: (c: Uint8Array) => void, base = q) => {
    const c = Uint8Array.from(base);
    f(c);
    return c;
  };
  // header (id 1, RD, qd 1) then the question bytes given
  const withQuestion = (qs: string) => hex(`0001 0100 0001 0000 0000 0000 ${qs}`);
  it.each<[string, Uint8Array, DnsDropReason]>([
    ['empty', new Uint8Array(0), DnsDropReason.short],
    ['11 bytes', q.subarray(0, 11), DnsDropReason.short],
    ['a response', mut((c) => (c[2] |= 0x80)), DnsDropReason.isResponse],
    ['qdcount 0', mut((c) => (c[5] = 0)), DnsDropReason.badCounts],
    ['qdcount 2', mut((c) => (c[5] = 2)), DnsDropReason.badCounts],
    ['ancount 1', mut((c) => (c[7] = 1)), DnsDropReason.badCounts],
    ['nscount 1', mut((c) => (c[9] = 1)), DnsDropReason.badCounts],
    ['arcount 2', mut((c) => (c[11] = 2)), DnsDropReason.badCounts],
    ['arcount 1 but no OPT', mut((c) => (c[11] = 1)), DnsDropReason.badOpt],
    ['name runs off the end', q.subarray(0, 20), DnsDropReason.truncated],
    ['type/class cut', q.subarray(0, q.length - 2), DnsDropReason.truncated],
    ['self pointer', withQuestion('c00c 0001 0001'), DnsDropReason.pointerLoop],
    ['forward pointer', withQuestion('c010 0001 0001 00'), DnsDropReason.pointerLoop],
    ['pointer loop via a label', withQuestion('0161 c00c 0001 0001'), DnsDropReason.pointerLoop],
    ['pointer into the header', withQuestion('c002 0001 0001'), DnsDropReason.badName],
    ['half a pointer', withQuestion('c0'), DnsDropReason.truncated],
    ['0x40 label type', withQuestion('4161 00 0001 0001'), DnsDropReason.badName],
    ['dot inside a label', withQuestion('03612e62 00 0001 0001'), DnsDropReason.badName],
    ['name over 255 bytes', withQuestion(`${'3f' + '61'.repeat(63)}`.repeat(5) + '00 0001 0001'), DnsDropReason.badName],
  ])('%s', (_n, msg, reason) => {
    const stats = new DnsStats();
    const r = new DnsResponder({ directory, upstreamAllowed: () => true, stats });
    expect(r.handle(msg)).toEqual({ kind: 'drop' });
    expect(stats.count(reason)).toBe(1);
    expect(stats.dropped).toBe(1);
  });

  it('the "pointer loop via a label" case really loops and is stopped by the jump cap', () => {
    // label "a" at 12, pointer at 14 -> 12: each pass reads "a" and jumps back
    const stats = new DnsStats();
    expect(parseQuery(withQuestion('0161 c00c 0001 0001'), stats)).toBeNull();
  });

  it('accepts a query with an EDNS OPT record', () => {
    const opt = hex('00 0029 1000 00 00 0000 0000');
    const m = new Uint8Array(q.length + opt.length);
    m.set(q);
    m.set(opt, q.length);
    m[11] = 1;
    expect(parseQuery(m)?.question.name).toBe('web.default.lattice');
  });

  it('random bytes never throw', () => {
    const stats = new DnsStats();
    const r = new DnsResponder({ directory, upstreamAllowed: () => true, stats });
    let seed = 5;
    for (let i = 0; i < 20_000; i++) {
      const len = (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % 80;
      const b = new Uint8Array(len);
      for (let j = 0; j < len; j++) b[j] = (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24;
      if (len > 11) {
        // mostly well-formed headers, so the name parser gets exercised
        b[2] &= 0x7f;
        b.fill(0, 4, 12);
        b[5] = 1;
      }
      r.handle(b);
      parseResponse(b);
    }
    expect(stats.queries + stats.dropped).toBe(20_000);
  });
});

describe('responses', () => {
  it('cap at 512 bytes without setting TC', () => {
    const query = parseQuery(buildQuery(1, 'many.example.com', DnsType.A))!;
    const addrs = Array.from({ length: 100 }, (_, i) => ip(`198.51.100.${i}`));
    const resp = buildAddressResponse(query, addrs, 60);
    expect(resp.length).toBeLessThanOrEqual(512);
    const r = parseResponse(resp)!;
    expect(r.truncated).toBe(false);
    expect(r.answers.length).toBe(Math.floor((512 - 12 - 18 - 4) / 16));
  });
  it('only records of the asked family', () => {
    const query = parseQuery(buildQuery(1, 'x.example.com', DnsType.AAAA))!;
    const r = parseResponse(buildResponse(query, Rcode.noError, [{ addr: ip('1.2.3.4'), ttlSec: 5 }, { addr: ip('2001:db8::1'), ttlSec: 5 }]))!;
    expect(r.answers.map((a) => formatIp(a.addr!))).toEqual(['2001:db8::1']);
  });
  it('parseResponse reads a compressed upstream answer with a CNAME (dig-style)', () => {
    // id 0xabcd, QR RD RA, 1 question, 2 answers: www.example.com CNAME example.com; example.com A 93.184.216.34
    const msg = hex(
      'abcd 8180 0001 0002 0000 0000' +
        '03777777 076578616d706c65 03636f6d 00 0001 0001' +
        'c00c 0005 0001 00000e10 0002 c010' +
        'c010 0001 0001 0000012c 0004 5db8d822',
    );
    const r = parseResponse(msg)!;
    expect(r.id).toBe(0xabcd);
    expect(r.answers.map((a) => [a.name, a.type, a.ttlSec, a.addr && formatIp(a.addr)])).toEqual([
      ['www.example.com', DnsType.CNAME, 3600, undefined],
      ['example.com', DnsType.A, 300, '93.184.216.34'],
    ]);
  });
  it('a reply packet swaps addresses and ports', () => {
    const qpkt = buildUdp({ src: ip('10.77.0.2'), dst: ip('10.77.0.53'), srcPort: 40000, dstPort: 53, payload: buildQuery(5, 'web.default.lattice', DnsType.A) });
    const p = parsePacket(qpkt)!;
    const out = responder().handle(transportPayload(p, qpkt));
    if (out.kind !== 'answer') throw new Error('expected an answer');
    const reply = parsePacket(buildDnsReplyPacket(p, out.response))!;
    expect([formatIp(reply.src), reply.srcPort, formatIp(reply.dst), reply.dstPort]).toEqual(['10.77.0.53', 53, '10.77.0.2', 40000]);
  });
});
