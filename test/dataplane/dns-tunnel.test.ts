import { describe, it, expect } from 'vitest';
import { TunnelResolver, TUNNEL_PORT_MIN, TUNNEL_PORT_MAX } from '../../src/dataplane/dns-tunnel.js';
import { DnsLimiter, DnsResponder, DnsType, MapDirectory, Rcode, buildAddressResponse, buildQuery, buildResponse, parseQuery, parseResponse, upstreamFailure } from '../../src/dataplane/dns.js';
import { buildUdp, parsePacket } from '../../src/dataplane/packet.js';
import { exitDnsStep } from '../../src/host/dns.js';
import { formatIp, parseIp, type IpAddr } from '../../src/net/addr.js';
import { ManualTimers } from '../support/timers.js';
import { seededRandom } from '../support/random.js';

const SANDBOX = parseIp('10.77.0.9')!;
const EXIT = parseIp('10.77.0.5')!;
const WEB = parseIp('203.0.113.10')!;

function setup(server: IpAddr | null = EXIT) {
  const rnd = seededRandom();
  const timers = new ManualTimers();
  const sent: Uint8Array[] = [];
  let route = true;
  const r = new TunnelResolver({ send: (p) => (sent.push(p), route), source: SANDBOX, server: () => server ?? undefined, timers, random: (n) => rnd.int(n) });
  /** The exit node's answer to sent packet `i`, built by `answer` from the parsed query. */
  const reply = (i: number, answer: (q: NonNullable<ReturnType<typeof parseQuery>>) => Uint8Array, from: IpAddr = EXIT) => {
    const p = parsePacket(sent[i]!)!;
    const q = parseQuery(sent[i]!.subarray(p.payloadOffset))!;
    return buildUdp({ src: from, dst: p.src, srcPort: 53, dstPort: p.srcPort, payload: answer(q) });
  };
  return { r, timers, sent, reply, noRoute: () => (route = false) };
}

describe('TunnelResolver', () => {
  it('sends an A query from the sandbox address and a port below the ephemeral range to the exit node, and resolves its answer', async () => {
    const t = setup();
    const pending = t.r.resolve('API.example.test', 4);
    expect(t.sent).toHaveLength(1);
    const p = parsePacket(t.sent[0]!)!;
    expect(formatIp(p.src)).toBe('10.77.0.9');
    expect(formatIp(p.dst)).toBe('10.77.0.5');
    expect(p.dstPort).toBe(53);
    expect(p.srcPort).toBeGreaterThanOrEqual(TUNNEL_PORT_MIN);
    expect(p.srcPort).toBeLessThanOrEqual(TUNNEL_PORT_MAX);
    const q = parseQuery(t.sent[0]!.subarray(p.payloadOffset))!;
    expect(q.question).toMatchObject({ name: 'api.example.test', type: DnsType.A });
    expect(t.r.take(t.reply(0, (qq) => buildAddressResponse(qq, [WEB], 42)))).toBe(true);
    await expect(pending).resolves.toEqual({ addresses: [WEB], ttlSec: 42 });
    expect(t.timers.waiting).toEqual([]); // the timeout is cancelled
  });

  it('maps the exit node\'s rcodes to node:dns codes the pump understands (NXDOMAIN, NODATA, SERVFAIL)', async () => {
    for (const [rcode, code, agentRcode] of [
      [Rcode.nxDomain, 'ENOTFOUND', Rcode.nxDomain],
      [Rcode.noError, 'ENODATA', Rcode.noError],
      [Rcode.servFail, 'EEXIT_DNS', Rcode.servFail],
    ] as const) {
      const t = setup();
      const pending = t.r.resolve('x.example.test', 6);
      expect(t.r.take(t.reply(0, (q) => buildResponse(q, rcode)))).toBe(true);
      const err = await pending.then(() => undefined, (e: unknown) => e);
      expect(err).toMatchObject({ code });
      expect(upstreamFailure(err).rcode).toBe(agentRcode);
    }
  });

  it('leaves other packets to the pump: wrong source, wrong port, another source address', async () => {
    const t = setup();
    const pending = t.r.resolve('api.example.test', 4);
    const p = parsePacket(t.sent[0]!)!;
    const payload = parseQuery(t.sent[0]!.subarray(p.payloadOffset))!;
    const answer = buildAddressResponse(payload, [WEB], 60);
    // From another address (an attacker on another peer guessing the port): not ours.
    expect(t.r.take(t.reply(0, () => answer, parseIp('10.77.0.66')!))).toBe(false);
    // To another port of the sandbox.
    expect(t.r.take(buildUdp({ src: EXIT, dst: SANDBOX, srcPort: 53, dstPort: p.srcPort === 16000 ? 16001 : 16000, payload: answer }))).toBe(false);
    // TCP or anything else: not looked at.
    expect(t.r.take(new Uint8Array([0x45, 0, 0, 20]))).toBe(false);
    // A wrong id on our port is swallowed (never reaches the sandbox) and does not settle the query.
    const wrongId = new Uint8Array(answer);
    wrongId[0] ^= 0xff;
    expect(t.r.take(t.reply(0, () => wrongId))).toBe(true);
    expect(t.r.counters.mismatched).toBe(1);
    expect(t.r.take(t.reply(0, () => answer))).toBe(true);
    await expect(pending).resolves.toEqual({ addresses: [WEB], ttlSec: 60 });
    // Nothing pending: every packet goes on untouched.
    expect(t.r.take(t.reply(0, () => answer))).toBe(false);
  });

  it('retries once on a new port after the timeout, then fails (EEXIT_DNS, timeout)', async () => {
    const t = setup();
    const pending = t.r.resolve('api.example.test', 4);
    t.timers.advance(2500);
    await Promise.resolve();
    await Promise.resolve();
    expect(t.sent).toHaveLength(2);
    // A late answer to the first query is no longer awaited.
    expect(t.r.take(t.reply(0, (q) => buildAddressResponse(q, [WEB], 60)))).toBe(parsePacket(t.sent[0]!)!.srcPort === parsePacket(t.sent[1]!)!.srcPort);
    t.timers.advance(2500);
    await expect(pending).rejects.toMatchObject({ code: 'EEXIT_DNS', timeout: true });
    expect(t.r.counters.timeouts).toBe(2);
  });

  it('fails at once (EEXIT_DNS) with no exit node in the directory or no peer for its address, and after close()', async () => {
    await expect(setup(null).r.resolve('api.example.test', 4)).rejects.toMatchObject({ code: 'EEXIT_DNS' });
    const t = setup();
    t.noRoute();
    await expect(t.r.resolve('api.example.test', 4)).rejects.toMatchObject({ code: 'EEXIT_DNS' });
    const c = setup();
    const pending = c.r.resolve('api.example.test', 4);
    c.r.close();
    await expect(pending).rejects.toMatchObject({ code: 'EEXIT_DNS' });
  });

  it('wrap(): the pump sees every packet except the replies it takes', async () => {
    const t = setup();
    let sink: ((p: Uint8Array, peer: string) => void) | undefined;
    const seen: Uint8Array[] = [];
    const dev = t.r.wrap<string>({ sendPacket: () => true, attach: (on) => (sink = on) });
    dev.attach((p) => seen.push(p));
    const pending = t.r.resolve('api.example.test', 4);
    const other = buildUdp({ src: EXIT, dst: SANDBOX, srcPort: 53, dstPort: 40000, payload: new Uint8Array(12) });
    sink!(other, 'exit');
    sink!(t.reply(0, (q) => buildAddressResponse(q, [WEB], 60)), 'exit');
    await pending;
    expect(seen).toEqual([other]);
  });
});

describe('exit node DNS forwarder step', () => {
  const responder = () => new DnsResponder({ directory: new MapDirectory(), upstreamAllowed: () => true });
  it('looks A/AAAA up, answers overlay names NXDOMAIN and other types NODATA without a lookup, SERVFAILs over the bound', () => {
    const r = responder();
    const lim = new DnsLimiter({ maxInFlight: 1, perSecond: 10, burst: 10 });
    const a = exitDnsStep(r, lim, buildQuery(1, 'api.example.test', DnsType.A), 0);
    expect(a && 'lookup' in a && a.lookup.question.name).toBe('api.example.test');
    const over = exitDnsStep(r, lim, buildQuery(2, 'b.example.test', DnsType.AAAA), 0);
    expect(over && 'throttled' in over && parseResponse(over.throttled)!.rcode).toBe(Rcode.servFail);
    const overlay = exitDnsStep(r, lim, buildQuery(3, 'db.prod.lattice', DnsType.A), 0);
    expect(overlay && 'reply' in overlay && parseResponse(overlay.reply)!.rcode).toBe(Rcode.nxDomain);
    const txt = exitDnsStep(r, lim, buildQuery(4, 'api.example.test', DnsType.TXT), 0);
    expect(txt && 'reply' in txt && parseResponse(txt.reply)).toMatchObject({ rcode: Rcode.noError, answers: [] });
    expect(exitDnsStep(r, lim, new Uint8Array(5), 0)).toBeNull();
  });
});
