import { describe, expect, it } from 'vitest';
import {
  DnsDropReason,
  DnsResponder,
  DnsType,
  MapDirectory,
  Rcode,
  buildAddressResponse,
  buildDnsReplyPacket,
  buildResponse,
  parseQuery,
  parseResponse,
} from '../../src/dataplane/dns.js';
import { buildUdp, parsePacket, transportPayload } from '../../src/dataplane/packet.js';
import { DnsAllowances, compilePolicy, domainAllowed, evaluate, formatIp, parseIp } from '../../src/policy/index.js';
import { decodeDns, dnsQuery, type RecordTypeName } from '../support/dns-oracle.js';
import { seededRandom } from '../support/random.js';
import { ParseStats } from '../../src/dataplane/stats.js';

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
  it.each<[string, RecordTypeName, number, string[]]>([
    ['web.default.lattice', 'A', Rcode.noError, ['10.77.0.1']],
    ['WEB.Default.Lattice.', 'A', Rcode.noError, ['10.77.0.1']],
    ['web.default.lattice', 'AAAA', Rcode.noError, ['fd77::1']],
    ['db.team-a.lattice', 'AAAA', Rcode.noError, []],
    ['web.default.lattice', 'MX', Rcode.noError, []],
    ['nope.default.lattice', 'A', Rcode.nxDomain, []],
    ['lattice', 'A', Rcode.nxDomain, []],
  ])('%s type %s -> rcode %i %j', (name, type, rcode, addrs) => {
    const out = responder().handle(dnsQuery(0x1234, name, type));
    expect(out.kind).toBe('answer');
    if (out.kind !== 'answer') return;
    const r = decodeDns(out.response);
    expect(r).toMatchObject({ id: 0x1234, rcode, qr: true, aa: true, tc: false, rd: true, ra: true });
    expect(r.question).toEqual({ name: name.replace(/\.$/, ''), type }); // case echoed as asked
    expect(r.answers.map((a) => [a.name, a.type, a.data, a.ttl])).toEqual(addrs.map((a) => [name.replace(/\.$/, ''), type, a, 30]));
  });
});

describe('names outside the overlay', () => {
  it('a name a domain rule allows goes upstream; the answer and allowances follow', () => {
    const out = responder().handle(dnsQuery(7, 'api.example.com', 'A'));
    expect(out.kind).toBe('upstream');
    if (out.kind !== 'upstream') return;
    expect(out.query.question.name).toBe('api.example.com');
    // what the I/O layer does with node:dns's answer
    const allowances = new DnsAllowances();
    const addrs = [ip('198.51.100.7'), ip('198.51.100.8')];
    const ttl = allowances.record(out.query.question.name, addrs, 120, NOW);
    const r = decodeDns(buildAddressResponse(out.query, addrs, ttl));
    expect(r).toMatchObject({ id: 7, rcode: 0, qr: true, aa: false });
    expect(r.answers.map((a) => [a.name, a.data, a.ttl])).toEqual([
      ['api.example.com', '198.51.100.7', 120],
      ['api.example.com', '198.51.100.8', 120],
    ]);
    expect(evaluate(policy, { direction: 'egress', protocol: 6, remote: addrs[1], dstPort: 443 }, NOW, allowances).ruleId).toBe('api');
  });
  it('wildcards go upstream too, other record types get NODATA', () => {
    expect(responder().handle(dnsQuery(1, 'deb.pkg.example.org', 'AAAA')).kind).toBe('upstream');
    const txt = responder().handle(dnsQuery(1, 'api.example.com', 'TXT'));
    expect(txt.kind).toBe('answer');
    if (txt.kind === 'answer') expect(decodeDns(txt.response)).toMatchObject({ rcode: 0, answers: [] });
  });
  it('other names are refused with NXDOMAIN', () => {
    for (const name of ['example.com', 'evil.example.net', 'pkg.example.org', '']) {
      const out = responder().handle(dnsQuery(9, name, 'A'));
      expect(out.kind).toBe('notAllowedNxDomain');
      if (out.kind === 'notAllowedNxDomain') expect(decodeDns(out.response)).toMatchObject({ id: 9, rcode: Rcode.nxDomain, answers: [] });
    }
  });
  it('non-query opcodes get NOTIMP, CHAOS class gets REFUSED', () => {
    const out = responder().handle(dnsQuery(3, 'web.default.lattice', 'A', { opcode: 2 })); // STATUS
    expect(out.kind === 'answer' && decodeDns(out.response)).toMatchObject({ id: 3, rcode: Rcode.notImp, qr: true });
    const o2 = responder().handle(dnsQuery(3, 'version.bind', 'TXT', { class: 'CH' }));
    expect(o2.kind === 'answer' && decodeDns(o2.response)).toMatchObject({ id: 3, rcode: Rcode.refused, qr: true });
  });
});

describe('hostile queries are dropped and counted', () => {
  const q = dnsQuery(1, 'web.default.lattice', 'A');
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
    const stats = new ParseStats<DnsDropReason>();
    const r = new DnsResponder({ directory, upstreamAllowed: () => true, stats });
    const out = r.handle(msg);
    if (msg.length < 12 || (msg[2] & 0x80) !== 0) {
      expect(out).toEqual({ kind: 'drop' }); // nothing to answer: too short, or a response
    } else {
      // RFC 1035 4.1.1: a query whose header reads gets FORMERR, id echoed, no sections.
      expect(out.kind).toBe('formErr');
      const resp = parseResponse((out as { response: Uint8Array }).response)!;
      expect(resp).toMatchObject({ id: (msg[0] << 8) | msg[1], rcode: Rcode.formErr, answers: [] });
    }
    expect(stats.count(reason)).toBe(1);
    expect(stats.dropped).toBe(1);
  });

  it('the "pointer loop via a label" case really loops and is stopped by the jump cap', () => {
    // label "a" at 12, pointer at 14 -> 12: each pass reads "a" and jumps back
    const stats = new ParseStats<DnsDropReason>();
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
    const stats = new ParseStats<DnsDropReason>();
    const r = new DnsResponder({ directory, upstreamAllowed: () => true, stats });
    const rnd = seededRandom();
    for (let i = 0; i < 20_000; i++) {
      const b = rnd.bytes(rnd.int(80));
      const len = b.length;
      if (len > 11) {
        // mostly well-formed headers, so the name parser gets exercised
        b[2] &= 0x7f;
        b.fill(0, 4, 12);
        b[5] = 1;
      }
      r.handle(b);
      parseResponse(b);
    }
    expect(stats.parsed + stats.dropped).toBe(20_000);
  });
});

describe('responses', () => {
  it('cap at 512 bytes without setting TC', () => {
    const query = parseQuery(dnsQuery(1, 'many.example.com', 'A'))!;
    const addrs = Array.from({ length: 100 }, (_, i) => ip(`198.51.100.${i}`));
    const resp = buildAddressResponse(query, addrs, 60);
    expect(resp.length).toBeLessThanOrEqual(512);
    const r = decodeDns(resp);
    expect(r.tc).toBe(false);
    expect(r.answers.map((a) => a.data)).toEqual(addrs.slice(0, r.answers.length).map(formatIp));
    expect(r.answers.length).toBe(Math.floor((512 - 12 - 18 - 4) / 16));
  });
  it('only records of the asked family', () => {
    const query = parseQuery(dnsQuery(1, 'x.example.com', 'AAAA'))!;
    const r = decodeDns(buildResponse(query, Rcode.noError, [{ addr: ip('1.2.3.4'), ttlSec: 5 }, { addr: ip('2001:db8::1'), ttlSec: 5 }]));
    expect(r.answers.map((a) => [a.type, a.data])).toEqual([['AAAA', '2001:db8::1']]);
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
    const qpkt = buildUdp({ src: ip('10.77.0.2'), dst: ip('10.77.0.53'), srcPort: 40000, dstPort: 53, payload: dnsQuery(5, 'web.default.lattice', 'A') });
    const p = parsePacket(qpkt)!;
    const out = responder().handle(transportPayload(p, qpkt));
    if (out.kind !== 'answer') throw new Error('expected an answer');
    const reply = parsePacket(buildDnsReplyPacket(p, out.response))!;
    expect([formatIp(reply.src), reply.srcPort, formatIp(reply.dst), reply.dstPort]).toEqual(['10.77.0.53', 53, '10.77.0.2', 40000]);
  });
});
