import { describe, expect, it } from 'vitest';
import { cidrAllows, compilePolicy, evaluate, formatIp, parseIp, specialRange, validatePolicy } from '../../src/policy/index.js';

const ip = (s: string) => parseIp(s)!;
const allow = (cidrs: string[], extra: Record<string, unknown> = {}) => ({ version: 1, egress: [{ id: 'r', action: 'allow', cidrs, ...extra }] });

describe('one canonical form per address (issue 13, item 4)', () => {
  it.each([
    ['::ffff:10.77.0.9', '10.77.0.9', 32],
    ['::ffff:10.77.0.0/120', '10.77.0.0', 24],
    ['::FFFF:a4d:9', '10.77.0.9', 32],
    ['::ffff:0:0/96', '0.0.0.0', 0],
  ])('%s is stored as IPv4 %s/%i', (input, addr, bits) => {
    const res = validatePolicy({ version: 1, egress: [{ id: 'd', action: 'deny', cidrs: [input] }] });
    expect(res.ok).toBe(true);
    if (!res.ok) return;
    const c = res.policy.egress[0]!.cidrs![0]!;
    expect([formatIp(c.addr), c.bits]).toEqual([addr, bits]);
  });

  it('a deny written in the mapped form matches the IPv4 flow', () => {
    const p = compilePolicy({ version: 1, egress: [{ id: 'lan', action: 'allow', cidrs: ['10.77.0.0/24'] }, { id: 'not-9', action: 'deny', cidrs: ['::ffff:10.77.0.9'] }] });
    expect(evaluate(p, { direction: 'egress', protocol: 6, remote: ip('10.77.0.9'), dstPort: 443 }, 0).ruleId).toBe('not-9');
    expect(evaluate(p, { direction: 'egress', protocol: 6, remote: ip('10.77.0.8'), dstPort: 443 }, 0).ruleId).toBe('lan');
  });

  it.each([
    ['::ffff:0.0.0.0/96', /every address/],
    ['::ffff:0.0.0.0/97', /large share/],
    ['64:ff9b::/96', /every IPv4 address through its NAT64/],
    ['64:ff9b::/100', /IPv4 \/4 through its NAT64/],
    ['2002::/16', /every IPv4 address through its 6to4/],
    ['::/64', /every IPv4 address/],
  ])('the over-broad check sees through %s', (cidr, message) => {
    const res = validatePolicy(allow([cidr]));
    expect(res.ok).toBe(false);
    if (res.ok) return;
    expect(res.problems[0]).toMatchObject({ path: 'egress[0].cidrs[0]', message: expect.stringMatching(message), fix: expect.stringMatching(/allowAnyAddress/) });
    expect(validatePolicy(allow([cidr], { allowAnyAddress: true })).ok).toBe(true);
  });

  it.each(['64:ff9b::a4d:9', '64:ff9b::/104', '2002:a4d::/32', 'fd77::/64', '::ffff:10.0.0.0/104'])('%s is narrow enough', (cidr) => {
    expect(validatePolicy(allow([cidr])).ok).toBe(true);
  });

  it('rule ids the data plane reports itself are reserved', () => {
    for (const id of ['icmp-error-mismatch', 'icmp-error-unrelated', 'icmp-unsolicited-reply', 'default-deny']) {
      expect(validatePolicy(allow(['10.0.0.0/8'], { id })).ok).toBe(false);
    }
  });
});

describe('special ranges (issue 13, item 5)', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['192.168.1.1', 'private'],
    ['10.77.0.11', 'private'],
    ['172.31.255.255', 'private'],
    ['100.64.0.1', 'shared address space (CGN)'],
    ['0.0.0.0', 'this network'],
    ['224.0.0.251', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['fd00::1', 'unique local (private)'],
    ['ff02::1', 'multicast'],
    ['::ffff:169.254.169.254', 'link-local, embedded in IPv6'],
    ['64:ff9b::7f00:1', 'loopback, embedded in IPv6'],
    ['2002:c0a8:101::1', 'private, embedded in IPv6'],
    ['::ffff:93.184.215.14', 'IPv4-mapped'],
  ])('%s is %s', (a, label) => expect(specialRange(ip(a))).toBe(label));

  it.each(['93.184.215.14', '1.1.1.1', '2606:4700::1111', '64:ff9b::808:808', '203.0.113.10', '2001:db8::1'])('%s is globally reachable or documentation-only (no rebinding target)', (a) => expect(specialRange(ip(a))).toBeUndefined());

  it('cidrAllows: a live CIDR allow rule covers the address; domain rules and full denies do not count', () => {
    const p = compilePolicy({
      version: 1,
      egress: [
        { id: 'lan', action: 'allow', cidrs: ['192.168.1.0/24'], ports: [443], protocol: 'tcp' },
        { id: 'gone', action: 'allow', cidrs: ['10.1.0.0/16'], expiresAt: '2000-01-01T00:00:00Z' },
        { id: 'not-5', action: 'deny', cidrs: ['192.168.1.5/32'] },
        { id: 'ex', action: 'allow', domains: ['*.example.com'] },
      ],
    });
    expect(cidrAllows(p, ip('192.168.1.1'), Date.now())).toBe(true);
    expect(cidrAllows(p, ip('192.168.1.5'), Date.now())).toBe(false);
    expect(cidrAllows(p, ip('10.1.0.1'), Date.now())).toBe(false);
    expect(cidrAllows(p, ip('127.0.0.1'), Date.now())).toBe(false);
  });
});
