import { describe, expect, it } from 'vitest';
import { formatIp, ipFromBytes, ipToBytes, parseCidr, parseIp } from '../../src/net/addr.js';

describe('parseIp / formatIp', () => {
  it.each([
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['10.77.0.1', '10.77.0.1'],
    ['::', '::'],
    ['::1', '::1'],
    ['fd77::', 'fd77::'],
    ['FD77:0:0:0:0:0:0:1', 'fd77::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8::0:1', '2001:db8::1'],
    ['1:0:1:1:1:1:1:1', '1:0:1:1:1:1:1:1'],
    ['::ffff:1.2.3.4', '::ffff:102:304'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
  ])('%s -> %s', (input, canonical) => {
    const a = parseIp(input);
    expect(a).toBeDefined();
    expect(formatIp(a!)).toBe(canonical);
    expect(formatIp(ipFromBytes(ipToBytes(a!), 0, a!.family))).toBe(canonical);
  });

  it.each(['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-1', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9', 'fe80::1%eth0', 'g::1', '12345::', '1.2.3.4/8', ' 1.2.3.4'])(
    'rejects %j',
    (input) => expect(parseIp(input)).toBeUndefined(),
  );
});

describe('parseCidr', () => {
  it('accepts networks and bare hosts', () => {
    expect(parseCidr('10.0.0.0/8')).toMatchObject({ ok: true, cidr: { bits: 8 } });
    expect(parseCidr('10.0.0.1')).toMatchObject({ ok: true, cidr: { bits: 32 } });
    expect(parseCidr('fd77::/64')).toMatchObject({ ok: true, cidr: { bits: 64 } });
    expect(parseCidr('::/0')).toMatchObject({ ok: true, cidr: { bits: 0 } });
  });
  it('rejects bad lengths and host bits, naming the network', () => {
    expect(parseCidr('10.0.0.0/33')).toEqual({ ok: false, reason: 'length' });
    expect(parseCidr('fd77::/129')).toEqual({ ok: false, reason: 'length' });
    expect(parseCidr('10.0.0.0/')).toEqual({ ok: false, reason: 'length' });
    expect(parseCidr('10.0.0.1/24')).toEqual({ ok: false, reason: 'host-bits', network: '10.0.0.0/24' });
    expect(parseCidr('fd77::1/64')).toEqual({ ok: false, reason: 'host-bits', network: 'fd77::/64' });
    expect(parseCidr('x/8')).toEqual({ ok: false, reason: 'syntax' });
  });
});
