import { describe, expect, it } from 'vitest';
import { UsageError, LatticeError } from '../../src/errors.js';
import { netnsPath, validNetnsName } from '../../src/netns/ip.js';
import { sandboxNetnsName, sandboxTunName, setupSandboxNetwork, SANDBOX_NETNS_PREFIX } from '../../src/netns/sandbox-net.js';
import { checksum, formatIp, icmpEcho, ipv6Bytes, parseIp, parseUdp, udpPacket } from './packets.js';

describe('netns names', () => {
  it('names the netns from the sandbox id under the lattice- prefix', () => {
    expect(SANDBOX_NETNS_PREFIX).toBe('lattice-');
    expect(sandboxNetnsName('abc123')).toBe('lattice-abc123');
    expect(sandboxNetnsName('x', 'ltnet-')).toBe('ltnet-x');
    expect(netnsPath('lattice-abc123')).toBe('/var/run/netns/lattice-abc123');
  });

  it('rejects ids that cannot be a netns file name', () => {
    for (const bad of ['', 'a/b', '../x', 'sp ace', 'x'.repeat(60)]) {
      expect(() => sandboxNetnsName(bad)).toThrow(UsageError);
    }
    expect(validNetnsName('..')).toBe(false);
    expect(() => netnsPath('a/b')).toThrow(LatticeError);
  });

  it('derives a stable TUN name within IFNAMSIZ, distinct per netns', () => {
    const a = sandboxTunName('lattice-a');
    expect(a).toMatch(/^lt[0-9a-f]{12}$/);
    expect(a.length).toBeLessThanOrEqual(15);
    expect(sandboxTunName('lattice-a')).toBe(a);
    expect(sandboxTunName('lattice-b')).not.toBe(a);
  });
});

describe('setupSandboxNetwork validation (before any host change)', () => {
  const base = { id: 'unit', prefix: 'ltnet-unit-' };
  it('needs addresses, well-formed CIDRs and a gateway per family', async () => {
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: [] })).rejects.toThrow(UsageError);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['10.0.0.2'], gateway: '10.0.0.1' })).rejects.toThrow(/address\/prefix-length/);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['10.0.0.2/33'], gateway: '10.0.0.1' })).rejects.toThrow(UsageError);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['10.0.0.2/32'] })).rejects.toThrow(/IPv4 gateway/);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['fd77::2/128'], gateway: '10.0.0.1' })).rejects.toThrow(/gateway6/);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['10.0.0.2/32'], gateway: 'fd77::1' })).rejects.toThrow(/IPv4 gateway/);
  });
});

describe('test packet helpers', () => {
  it('computes the RFC 1071 checksum', () => {
    // RFC 1071 section 3 example: the one's-complement sum of these bytes is 0xddf2.
    expect(checksum(Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]))).toBe(~0xddf2 & 0xffff);
    // Split across chunks at an odd boundary gives the same result.
    expect(checksum(Uint8Array.from([0x00, 0x01, 0xf2]), Uint8Array.from([0x03, 0xf4, 0xf5, 0xf6, 0xf7]))).toBe(~0xddf2 & 0xffff);
  });

  it('builds IPv4 headers and ICMP messages whose checksums verify', () => {
    const p = icmpEcho('10.0.0.1', '10.0.0.2', 8, 1, 2, new Uint8Array(13).fill(7));
    expect(p.length).toBe(20 + 8 + 13);
    expect(checksum(p.subarray(0, 20))).toBe(0);
    expect(checksum(p.subarray(20))).toBe(0);
    expect(parseIp(p)).toMatchObject({ version: 4, src: '10.0.0.1', dst: '10.0.0.2', proto: 1 });
  });

  it('round-trips UDP over IPv4 and IPv6', () => {
    const payload = new TextEncoder().encode('hello');
    for (const [src, dst] of [
      ['10.1.2.3', '10.3.2.1'],
      ['fd77::2', 'fd77::99'],
    ]) {
      const ip = parseIp(udpPacket(src, dst, 1234, 53, payload))!;
      expect(ip).toMatchObject({ src, dst, proto: 17 });
      const u = parseUdp(ip.l4)!;
      expect(u).toMatchObject({ sport: 1234, dport: 53 });
      expect(new TextDecoder().decode(u.payload)).toBe('hello');
    }
  });

  it('formats IPv6 like iproute2 does', () => {
    expect(formatIp(ipv6Bytes('fd77::2'))).toBe('fd77::2');
    expect(formatIp(ipv6Bytes('2001:db8:0:1::'))).toBe('2001:db8:0:1::');
    expect(formatIp(ipv6Bytes('::1'))).toBe('::1');
  });
});
