import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { formatCidr, formatIp, formatIpBytes, innerAddresses, ipFromBytes, ipToBytes, parseCidr, parseEndpointAddress, parseIp } from '../../src/net/addr.js';
import { parsePool } from '../../src/controlplane/ipam.js';
import { setupSandboxNetwork } from '../../src/netns/sandbox-net.js';
import { StunClass, decodeStun, encodeStun, mappedAddress } from '../../src/nat/stun.js';
import { validatePolicy } from '../../src/policy/index.js';
import { ConfigError, parseConfig, parseEndpoint } from '../../src/wg/config.js';

const KEY = Buffer.alloc(32, 1).toString('base64');

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

/**
 * Every odd input, one answer, and the same answer in each place that reads addresses: the policy
 * (CIDR rules), WireGuard (AllowedIPs, Address, Endpoint), IPAM pools, the sandbox's netns addresses,
 * and STUN. `ip`/`cidr` are what the module says; null means refused.
 */
const ODD: ReadonlyArray<{ input: string; ip: string | null; cidr: string | null; why: string }> = [
  { input: '010.0.0.1', ip: null, cidr: null, why: 'leading zero: octal to inet_aton, refused as by inet_pton' },
  { input: '10.0.0.01', ip: null, cidr: null, why: 'leading zero in the last octet' },
  { input: '0.0.0.0', ip: '0.0.0.0', cidr: '0.0.0.0/32', why: 'a single 0 is not a leading zero' },
  { input: '10.1', ip: null, cidr: null, why: 'inet_aton short form' },
  { input: '167772161', ip: null, cidr: null, why: 'inet_aton 32-bit number' },
  { input: '0x0a.0.0.1', ip: null, cidr: null, why: 'hex octet' },
  { input: '1.2.3.4.', ip: null, cidr: null, why: 'trailing dot' },
  { input: '[fd77::2]', ip: null, cidr: null, why: 'brackets belong to host:port text, not to an address' },
  { input: 'fd77::2%eth0', ip: null, cidr: null, why: 'zone id: only a UDP endpoint takes one' },
  { input: 'fe80::1%1', ip: null, cidr: null, why: 'numeric zone id' },
  { input: '0fd7:0:0:0:0:0:0:02', ip: 'fd7::2', cidr: 'fd7::2/128', why: 'IPv6 groups may have leading zeros (RFC 4291)' },
  { input: 'FD77::2', ip: 'fd77::2', cidr: 'fd77::2/128', why: 'uppercase hex, written lowercase (RFC 5952 4.3)' },
  { input: '::ffff:1.2.3.4', ip: '::ffff:102:304', cidr: '1.2.3.4/32', why: 'IPv4-mapped: an address as written; a configured range is IPv4' },
  { input: '::ffff:102:304', ip: '::ffff:102:304', cidr: '1.2.3.4/32', why: 'the same mapped address in hex' },
  { input: '::ffff:010.0.0.1', ip: null, cidr: null, why: 'leading zero inside an embedded dotted quad' },
  { input: '::1.2.3.4', ip: '::102:304', cidr: '::102:304/128', why: 'IPv4-compatible (deprecated) stays IPv6' },
  { input: '1.2.3.4::', ip: null, cidr: null, why: 'a dotted quad only ends an address' },
  { input: '1:2:3:4:5:6:7::', ip: '1:2:3:4:5:6:7:0', cidr: '1:2:3:4:5:6:7:0/128', why: ':: for one group; a single 0 is not compressed (RFC 5952 4.2.2)' },
  { input: '1:2:3:4:5:6:7:8::', ip: null, cidr: null, why: ':: with eight groups' },
  { input: '2001:db8:0:0:1:0:0:1', ip: '2001:db8::1:0:0:1', cidr: '2001:db8::1:0:0:1/128', why: 'first of two equal zero runs compressed (RFC 5952 4.2.3)' },
  { input: '10.0.0.0/08', ip: null, cidr: null, why: 'leading zero in a prefix length' },
  { input: '::ffff:10.0.0.0/104', ip: null, cidr: '10.0.0.0/8', why: 'a mapped prefix of /96 or longer is the IPv4 prefix' },
  { input: '::ffff:0:0/95', ip: null, cidr: '::fffe:0:0/95', why: 'shorter than /96 is not inside the mapped space' },
];

describe('odd inputs: one answer (src/net/addr.ts module comment)', () => {
  it.each(ODD)('$input -> address $ip, range $cidr ($why)', ({ input, ip, cidr }) => {
    const a = parseIp(input);
    expect(a === undefined ? null : formatIp(a)).toBe(ip);
    const c = parseCidr(input, { hostBits: 'mask' });
    expect(c.ok ? formatCidr(c.cidr) : null).toBe(cidr);
  });

  it.each(ODD)('$input: the policy, WireGuard, IPAM and the sandbox network agree', async ({ input, cidr }) => {
    const canonical = cidr === null ? null : parseCidr(cidr, { hostBits: 'mask' });
    const family = canonical?.ok ? canonical.cidr.addr.family : undefined;
    // WireGuard AllowedIPs (host bits masked, as wg(8) does).
    const wg = (() => {
      try {
        return parseConfig(`[Interface]\nPrivateKey = ${KEY}\n[Peer]\nPublicKey = ${KEY}\nAllowedIPs = ${input}\n`).peers[0].allowedIPs[0];
      } catch (err) {
        if (err instanceof ConfigError) return null;
        throw err;
      }
    })();
    expect(wg).toBe(cidr);
    // Policy CIDR rule (a deny, so no over-broad check; host bits refused, so compare the masked network).
    const v = validatePolicy({ version: 1, egress: [{ id: 'r', action: 'deny', cidrs: [input] }] });
    if (cidr === null) expect(v.ok).toBe(false);
    else if (v.ok) expect(formatCidr(v.policy.egress[0].cidrs![0])).toBe(cidr);
    else expect(JSON.stringify(v.problems[0])).toContain(cidr); // host bits set: the problem names the network
    // IPAM pool and the sandbox's overlay address need a length.
    const withLen = input.includes('/') ? input : `${input}/${input.includes(':') ? 128 : 32}`;
    if (cidr === null) expect(() => parsePool(withLen)).toThrow(UsageError);
    else expect(parsePool(cidr).addr.family).toBe(family);
    const net = setupSandboxNetwork({ id: 'addrtable', overlayAddrs: [withLen], prefix: 'ltaddrtest-' });
    if (cidr === null) await expect(net).rejects.toThrow(/overlay address/);
    else await expect(net).rejects.toThrow(new RegExp(`an IPv${family} overlay address needs`));
  });

  it('a zone id is taken only in a UDP endpoint (WireGuard Endpoint), and only on IPv6', () => {
    expect(parseEndpointAddress('fe80::1%eth0')).toMatchObject({ zone: 'eth0' });
    expect(parseEndpointAddress('10.0.0.1%eth0')).toBeUndefined();
    expect(parseEndpointAddress('fe80::1%')).toBeUndefined();
    expect(parseEndpoint('[fe80::1%eth0]:51820')).toMatchObject({ endpoint: { address: 'fe80::1%eth0', port: 51820 } });
    // "010.0.0.1" is neither an address nor a host name to resolve (a resolver would read it as octal).
    expect(parseEndpoint('010.0.0.1:51820')).toBeNull();
    expect(parseEndpoint('vpn.example.com:51820')).toMatchObject({ host: 'vpn.example.com' });
  });

  it('STUN reads and writes addresses through the module: a sender\'s zone is left out, leading zeros refused', () => {
    const txid = new Uint8Array(12).fill(7);
    for (const address of ['192.0.2.1', '2001:db8::1', '::ffff:102:304']) {
      const m = decodeStun(encodeStun({ class: StunClass.SuccessResponse, transactionId: txid, xorMappedAddress: { address, port: 3478 } }));
      expect(typeof m === 'string' ? m : mappedAddress(m)).toEqual({ address, port: 3478 });
    }
    const m = decodeStun(encodeStun({ class: StunClass.SuccessResponse, transactionId: txid, xorMappedAddress: { address: 'fe80::1%eth0', port: 1 } }));
    expect(typeof m === 'string' ? m : mappedAddress(m)).toEqual({ address: 'fe80::1', port: 1 });
    for (const address of ['010.0.0.1', '10.0.0.1%eth0']) {
      expect(() => encodeStun({ class: StunClass.SuccessResponse, transactionId: txid, xorMappedAddress: { address, port: 1 } })).toThrow(RangeError);
    }
  });

  it('reads addresses from packet bytes without copying, and refuses truncated headers', () => {
    const pkt = new Uint8Array(20);
    pkt[0] = 0x45;
    pkt[3] = 20;
    pkt.set([10, 0, 0, 1, 10, 0, 0, 2], 12);
    const a = innerAddresses(pkt)!;
    expect(formatIpBytes(a.src)).toBe('10.0.0.1');
    expect(a.dst.buffer).toBe(pkt.buffer);
    expect(innerAddresses(pkt.subarray(0, 19))).toBeNull();
  });
});
