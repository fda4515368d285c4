import { describe, expect, it } from 'vitest';
import { checksum, formatIp, icmpEcho, ipv6Bytes, parseIp, parseUdp, udpPacket } from '../../e2e/support/packets.js';

// The e2e tests' own packet codec, written apart from src/dataplane so it can check it: checked here first.
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
