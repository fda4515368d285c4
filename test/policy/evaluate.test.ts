import { describe, expect, it } from 'vitest';
import {
  type CompiledPolicy,
  type Decision,
  DnsAllowances,
  type FlowQuery,
  type IpAddr,
  compilePolicy,
  domainAllowed,
  domainDecision,
  evaluate,
  nextExpiry,
  parseCidr,
  parseIp,
  reevaluateFlows,
} from '../../src/policy/index.js';

const NOW = Date.parse('2030-01-01T00:00:00Z');
const ip = (s: string): IpAddr => parseIp(s)!;
const q = (remote: string, dstPort = 443, protocol = 6, direction: 'egress' | 'ingress' = 'egress'): FlowQuery => ({ direction, protocol, remote: ip(remote), dstPort });

const base = {
  version: 1,
  mode: 'enforce',
  egress: [
    { id: 'allow-api', action: 'allow', cidrs: ['10.77.0.0/24', 'fd77::/64'], ports: [443, '8000-8100'], protocol: 'tcp' },
    { id: 'allow-dns', action: 'allow', cidrs: ['10.77.0.53'], ports: [53], protocol: 'udp' },
    { id: 'deny-admin', action: 'deny', cidrs: ['10.77.0.9/32'] },
    { id: 'ping', action: 'allow', cidrs: ['10.77.0.0/16'], protocol: 'icmp' },
    { id: 'any-proto-v6', action: 'allow', cidrs: ['fd99::/48'] },
  ],
  ingress: [{ id: 'ssh-in', action: 'allow', cidrs: ['10.77.0.2/32'], ports: [22], protocol: 'tcp' }],
};

describe('evaluate', () => {
  const c = compilePolicy(base);
  it.each<[string, FlowQuery, 'allow' | 'deny', string]>([
    ['allowed port', q('10.77.0.1', 443), 'allow', 'allow-api'],
    ['range low edge', q('10.77.0.1', 8000), 'allow', 'allow-api'],
    ['range high edge', q('10.77.0.1', 8100), 'allow', 'allow-api'],
    ['just past the range', q('10.77.0.1', 8101), 'deny', 'default-deny'],
    ['other port', q('10.77.0.1', 80), 'deny', 'default-deny'],
    ['udp on a tcp rule', q('10.77.0.1', 443, 17), 'deny', 'default-deny'],
    ['outside the CIDR', q('10.77.1.1', 443), 'deny', 'default-deny'],
    ['last address of the /24', q('10.77.0.255', 443), 'allow', 'allow-api'],
    ['first address after', q('10.77.1.0', 443), 'deny', 'default-deny'],
    ['host rule udp', q('10.77.0.53', 53, 17), 'allow', 'allow-dns'],
    ['deny wins over allow', q('10.77.0.9', 443), 'deny', 'deny-admin'],
    ['deny wins for icmp too', q('10.77.0.9', 0, 1), 'deny', 'deny-admin'],
    ['icmp allowed', q('10.77.3.3', 0, 1), 'allow', 'ping'],
    ['icmp rule is not tcp', q('10.77.3.3', 443, 6), 'deny', 'default-deny'],
    ['v6 allowed', q('fd77::5', 443), 'allow', 'allow-api'],
    ['v6 last of /64', q('fd77::ffff:ffff:ffff:ffff', 8050), 'allow', 'allow-api'],
    ['v6 outside', q('fd77:0:0:1::', 443), 'deny', 'default-deny'],
    ['v6 any protocol', q('fd99::1', 0, 58), 'allow', 'any-proto-v6'],
    ['v6 any protocol, other proto', q('fd99::1', 0, 132), 'allow', 'any-proto-v6'],
    ['v4 rule does not match v6', q('::ffff:10.77.0.1', 443), 'deny', 'default-deny'],
    ['ingress allowed', q('10.77.0.2', 22, 6, 'ingress'), 'allow', 'ssh-in'],
    ['ingress other source', q('10.77.0.3', 22, 6, 'ingress'), 'deny', 'default-deny'],
    ['egress rules do not apply to ingress', q('10.77.0.1', 443, 6, 'ingress'), 'deny', 'default-deny'],
    ['0.0.0.0', q('0.0.0.0', 443), 'deny', 'default-deny'],
    ['255.255.255.255', q('255.255.255.255', 443), 'deny', 'default-deny'],
  ])('%s', (_n, flow, verdict, ruleId) => {
    const d = evaluate(c, flow, NOW);
    expect(d).toMatchObject({ verdict, effective: verdict, ruleId, wouldDeny: false, record: true });
  });

  it('returns shared decision objects (no allocation per decision)', () => {
    expect(evaluate(c, q('10.77.0.1'), NOW)).toBe(evaluate(c, q('10.77.0.2'), NOW));
    expect(evaluate(c, q('1.1.1.1'), NOW)).toBe(evaluate(c, q('fd00::1'), NOW));
  });

  it('an empty policy denies everything', () => {
    const e = compilePolicy({ version: 1 });
    expect(evaluate(e, q('10.77.0.1'), NOW).ruleId).toBe('default-deny');
    expect(evaluate(e, q('fd77::1'), NOW).effective).toBe('deny');
    expect(evaluate(e, q('10.77.0.1', 22, 6, 'ingress'), NOW).effective).toBe('deny');
  });
});

describe('modes', () => {
  it('audit lets denied flows through with wouldDeny', () => {
    const c = compilePolicy({ ...base, mode: 'audit' });
    expect(evaluate(c, q('10.77.0.1', 80), NOW)).toEqual({ verdict: 'deny', effective: 'allow', ruleId: 'default-deny', wouldDeny: true, record: true });
    expect(evaluate(c, q('10.77.0.9', 443), NOW)).toMatchObject({ verdict: 'deny', effective: 'allow', ruleId: 'deny-admin', wouldDeny: true });
    expect(evaluate(c, q('10.77.0.1', 443), NOW)).toEqual({ verdict: 'allow', effective: 'allow', ruleId: 'allow-api', wouldDeny: false, record: true });
  });
  it('disabled allows everything and records nothing', () => {
    const c = compilePolicy({ ...base, mode: 'disabled' });
    for (const f of [q('10.77.0.9'), q('8.8.8.8', 53, 17), q('fd00::1', 1, 6, 'ingress')]) {
      expect(evaluate(c, f, NOW)).toEqual({ verdict: 'allow', effective: 'allow', ruleId: 'mode-disabled', wouldDeny: false, record: false });
    }
    expect(domainAllowed(c, 'anything.example.net', NOW)).toBe(true);
  });
});

describe('expiresAt', () => {
  const at = '2030-01-01T00:00:10Z';
  const exp = Date.parse(at);
  const c = compilePolicy({
    version: 1,
    egress: [
      { id: 'temp', action: 'allow', cidrs: ['10.0.0.0/8'], expiresAt: at },
      { id: 'temp-deny', action: 'deny', cidrs: ['10.1.0.0/16'], expiresAt: '2030-01-01T00:00:05Z' },
    ],
  });
  it('allows before the instant, denies at and after it', () => {
    expect(evaluate(c, q('10.0.0.1'), exp - 1).ruleId).toBe('temp');
    expect(evaluate(c, q('10.0.0.1'), exp).ruleId).toBe('default-deny');
    expect(evaluate(c, q('10.0.0.1'), exp + 1).ruleId).toBe('default-deny');
  });
  it('an expired deny stops overriding', () => {
    const five = Date.parse('2030-01-01T00:00:05Z');
    expect(evaluate(c, q('10.1.0.1'), five - 1).ruleId).toBe('temp-deny');
    expect(evaluate(c, q('10.1.0.1'), five).ruleId).toBe('temp');
  });
  it('nextExpiry names the next instant to re-evaluate at', () => {
    expect(nextExpiry(c, NOW)).toBe(Date.parse('2030-01-01T00:00:05Z'));
    expect(nextExpiry(c, Date.parse('2030-01-01T00:00:05Z'))).toBe(exp);
    expect(nextExpiry(c, exp)).toBeUndefined();
  });
  it('a flow opened under an expiring rule is cut at expiry', () => {
    const flow = { ...q('10.0.0.1'), decision: evaluate(c, q('10.0.0.1'), NOW) };
    expect(reevaluateFlows(c, [flow], exp - 1).cut).toHaveLength(0);
    const r = reevaluateFlows(c, [flow], exp);
    expect(r.cut.map((x) => x.decision.ruleId)).toEqual(['default-deny']);
  });
});

describe('domain rules and DNS allowances', () => {
  const c = compilePolicy({
    version: 1,
    egress: [
      { id: 'api', action: 'allow', domains: ['api.example.com', '*.cdn.example.net'], ports: [443], protocol: 'tcp' },
      { id: 'no-evil', action: 'deny', domains: ['evil.cdn.example.net'] },
      { id: 'no-evil-http', action: 'deny', domains: ['api.example.com'], ports: [80] },
      { id: 'block-net', action: 'deny', cidrs: ['203.0.113.0/24'] },
    ],
  });

  it('domainAllowed: exact, wildcard (not the apex), deny, case and trailing dot', () => {
    expect(domainAllowed(c, 'api.example.com', NOW)).toBe(true);
    expect(domainAllowed(c, 'API.Example.COM.', NOW)).toBe(true);
    expect(domainAllowed(c, 'x.cdn.example.net', NOW)).toBe(true);
    expect(domainAllowed(c, 'a.b.cdn.example.net', NOW)).toBe(true);
    expect(domainAllowed(c, 'cdn.example.net', NOW)).toBe(false);
    expect(domainAllowed(c, 'xcdn.example.net', NOW)).toBe(false);
    expect(domainAllowed(c, 'example.com', NOW)).toBe(false);
    expect(domainDecision(c, 'evil.cdn.example.net', NOW).ruleId).toBe('no-evil');
    // a port-limited deny does not stop the name from resolving
    expect(domainDecision(c, 'api.example.com', NOW).ruleId).toBe('api');
  });

  it('allows exactly the resolved addresses, for the TTL', () => {
    const dns = new DnsAllowances({ minTtlSec: 1 });
    expect(evaluate(c, q('198.51.100.7'), NOW, dns).ruleId).toBe('default-deny');
    const ttl = dns.record('api.example.com', [ip('198.51.100.7'), ip('2001:db8::7')], 30, NOW);
    expect(ttl).toBe(30);
    expect(evaluate(c, q('198.51.100.7'), NOW, dns).ruleId).toBe('api');
    expect(evaluate(c, q('2001:db8::7'), NOW, dns).ruleId).toBe('api');
    expect(evaluate(c, q('198.51.100.8'), NOW, dns).ruleId).toBe('default-deny');
    expect(evaluate(c, q('198.51.100.7', 22), NOW, dns).ruleId).toBe('default-deny');
    expect(evaluate(c, q('198.51.100.7', 80), NOW, dns).ruleId).toBe('no-evil-http');
    expect(evaluate(c, q('198.51.100.7'), NOW + 29_999, dns).ruleId).toBe('api');
    expect(evaluate(c, q('198.51.100.7'), NOW + 30_000, dns).ruleId).toBe('default-deny');
    expect(evaluate(c, q('198.51.100.7'), NOW), 'no allowances given').toMatchObject({ ruleId: 'default-deny' });
  });

  it('a deny domain and a deny CIDR beat a domain allow', () => {
    const dns = new DnsAllowances();
    dns.record('evil.cdn.example.net', [ip('192.0.2.66')], 60, NOW);
    dns.record('ok.cdn.example.net', [ip('192.0.2.66'), ip('203.0.113.5')], 60, NOW);
    expect(evaluate(c, q('192.0.2.66'), NOW, dns).ruleId).toBe('no-evil');
    expect(evaluate(c, q('203.0.113.5'), NOW, dns).ruleId).toBe('block-net');
  });

  it('an address recorded for an unrelated name is not allowed', () => {
    const dns = new DnsAllowances();
    dns.record('other.example.org', [ip('192.0.2.1')], 60, NOW);
    expect(evaluate(c, q('192.0.2.1'), NOW, dns).ruleId).toBe('default-deny');
  });

  it('clamps TTLs and stays bounded', () => {
    const dns = new DnsAllowances({ maxEntries: 4, minTtlSec: 10, maxTtlSec: 100, retainMs: 0 });
    expect(dns.record('api.example.com', [ip('192.0.2.1')], 0, NOW)).toBe(10);
    expect(dns.record('api.example.com', [ip('192.0.2.2')], 10_000, NOW)).toBe(100);
    for (let i = 3; i < 50; i++) dns.record('api.example.com', [ip(`192.0.2.${i}`)], 60, NOW);
    expect(dns.size).toBeLessThanOrEqual(4);
    expect(evaluate(c, q('192.0.2.49'), NOW, dns).ruleId).toBe('api');
    expect(dns.prune(NOW + 200_000)).toBe(4);
    expect(dns.size).toBe(0);
  });

  it('re-evaluation keeps open flows whose DNS TTL passed, while retained', () => {
    const dns = new DnsAllowances({ retainMs: 60_000 });
    dns.record('api.example.com', [ip('198.51.100.7')], 10, NOW);
    const flow = { ...q('198.51.100.7'), decision: evaluate(c, q('198.51.100.7'), NOW, dns) };
    expect(flow.decision.ruleId).toBe('api');
    expect(reevaluateFlows(c, [flow], NOW + 20_000, dns).changed).toHaveLength(0);
    dns.prune(NOW + 100_000);
    expect(reevaluateFlows(c, [flow], NOW + 100_000, dns).cut).toHaveLength(1);
  });
});

describe('live update: reevaluateFlows', () => {
  it('cuts flows the new policy no longer allows and reports newly allowed ones', () => {
    const loose = compilePolicy({ version: 1, egress: [{ id: 'lan', action: 'allow', cidrs: ['10.77.0.0/16'] }] });
    const tight = compilePolicy({
      version: 1,
      egress: [
        { id: 'lan-web', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [443], protocol: 'tcp' },
        { id: 'extra', action: 'allow', cidrs: ['10.88.0.0/16'] },
      ],
    });
    const mk = (f: FlowQuery, c: CompiledPolicy): FlowQuery & { decision: Decision } => ({ ...f, decision: evaluate(c, f, NOW) });
    const web = mk(q('10.77.0.1', 443), loose);
    const ssh = mk(q('10.77.0.1', 22), loose);
    const other = mk(q('10.88.0.1', 22), loose);
    expect(other.decision.effective).toBe('deny');
    const r = reevaluateFlows(tight, [web, ssh, other], NOW);
    expect(r.cut.map((x) => x.flow)).toEqual([ssh]);
    expect(r.changed.map((x) => [x.flow, x.decision.ruleId])).toEqual([
      [web, 'lan-web'],
      [ssh, 'default-deny'],
      [other, 'extra'],
    ]);
  });
  it('switching to audit cuts nothing', () => {
    const enforce = compilePolicy({ version: 1, egress: [{ id: 'a', action: 'allow', cidrs: ['10.0.0.0/8'] }] });
    const audit = compilePolicy({ version: 1, mode: 'audit', egress: [] });
    const flow = { ...q('10.0.0.1'), decision: evaluate(enforce, q('10.0.0.1'), NOW) };
    const r = reevaluateFlows(audit, [flow], NOW);
    expect(r.cut).toHaveLength(0);
    expect(r.changed[0].decision).toMatchObject({ wouldDeny: true, effective: 'allow' });
  });
});

/** A slow, obviously-correct evaluator to check the compiled tables against. */
function reference(policy: typeof randomPolicy extends () => infer P ? P : never, f: FlowQuery): string {
  const inCidr = (s: string) => {
    const p = parseCidr(s);
    if (!p.ok || p.cidr.addr.family !== f.remote.family) return false;
    const a = p.cidr.addr;
    const w = [a.w0, a.w1, a.w2, a.w3];
    const x = [f.remote.w0, f.remote.w1, f.remote.w2, f.remote.w3];
    for (let bit = 0; bit < p.cidr.bits; bit++) {
      const i = bit >> 5;
      const m = 1 << (31 - (bit & 31));
      if ((w[i] & m) !== (x[i] & m)) return false;
    }
    return true;
  };
  const matches = (r: (typeof policy.egress)[number]) => {
    const proto = r.protocol ?? 'any';
    const pOk = proto === 'any' || (proto === 'tcp' && f.protocol === 6) || (proto === 'udp' && f.protocol === 17) || (proto === 'icmp' && (f.protocol === 1 || f.protocol === 58));
    if (!pOk) return false;
    if (r.ports && !(f.protocol === 6 || f.protocol === 17)) return false;
    if (r.ports && !r.ports.some((p) => (typeof p === 'number' ? p === f.dstPort : f.dstPort >= Number(p.split('-')[0]) && f.dstPort <= Number(p.split('-')[1])))) return false;
    return r.cidrs.some(inCidr);
  };
  const deny = policy.egress.find((r) => r.action === 'deny' && matches(r));
  if (deny) return deny.id;
  return policy.egress.find((r) => r.action === 'allow' && matches(r))?.id ?? 'default-deny';
}

let seed = 12345;
const rnd = (n: number) => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return (seed >>> 8) % n;
};
function randomAddr(v6: boolean): string {
  if (!v6) return `10.${rnd(4)}.${rnd(4)}.${rnd(256)}`;
  return `fd00:${rnd(3)}::${rnd(4).toString(16)}:${rnd(65536).toString(16)}`;
}
function randomCidr(v6: boolean): string {
  const bits = v6 ? [16, 32, 112, 120, 126, 128][rnd(6)] : [8, 16, 22, 24, 30, 32][rnd(6)];
  const p = parseCidr(`${randomAddr(v6)}/${v6 ? 128 : 32}`);
  if (!p.ok) throw new Error('bad');
  const a = p.cidr.addr;
  const words = [a.w0, a.w1, a.w2, a.w3].map((w, i) => {
    const keep = Math.max(0, Math.min(32, bits - i * 32));
    return keep === 0 ? 0 : (w & ((0xffffffff << (32 - keep)) >>> 0)) >>> 0;
  });
  const text = v6
    ? words.flatMap((w) => [(w >>> 16).toString(16), (w & 0xffff).toString(16)]).join(':')
    : `${words[0] >>> 24}.${(words[0] >>> 16) & 255}.${(words[0] >>> 8) & 255}.${words[0] & 255}`;
  return `${text}/${bits}`;
}
function randomPolicy() {
  const n = 1 + rnd(12);
  const egress = Array.from({ length: n }, (_, i) => ({
    id: `r${i}`,
    action: rnd(3) === 0 ? ('deny' as const) : ('allow' as const),
    cidrs: Array.from({ length: 1 + rnd(3) }, () => randomCidr(rnd(2) === 0)),
    ...(rnd(2) === 0 ? { protocol: (['tcp', 'udp', 'icmp', 'any'] as const)[rnd(4)] } : {}),
    ...(rnd(2) === 0 ? { ports: [rnd(4), `${2 + rnd(3)}-${5 + rnd(3)}`].map((p) => (p === 0 ? 1 : p)) as Array<number | string> } : {}),
  }));
  for (const r of egress) if (r.protocol === 'icmp') delete (r as { ports?: unknown }).ports;
  return { version: 1 as const, egress } as { version: 1; egress: Array<{ id: string; action: 'allow' | 'deny'; cidrs: string[]; protocol?: string; ports?: Array<number | string> }> };
}

describe('compiled tables agree with a naive evaluator', () => {
  it('on 300 random policies x 200 random flows', () => {
    for (let round = 0; round < 300; round++) {
      const policy = randomPolicy();
      const c = compilePolicy(policy);
      for (let k = 0; k < 200; k++) {
        const f = q(randomAddr(rnd(2) === 0), rnd(9), [6, 17, 1, 58, 132][rnd(5)]);
        const got = evaluate(c, f, NOW).ruleId;
        const want = reference(policy, f);
        if (got !== want) expect({ policy, flow: f, got }).toEqual({ policy, flow: f, got: want });
      }
    }
  });
});
