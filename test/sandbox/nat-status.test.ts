import { describe, it, expect } from 'vitest';
import { buildStatus, parseNatFlags, statusRows } from '../../src/sandbox/nat-status.js';
import type { PathStatus } from '../../src/nat/paths.js';

const KA = 'A'.repeat(42) + 'E=';
const KB = 'B'.repeat(42) + 'E=';
const KC = 'C'.repeat(42) + 'E=';
const agent = { namespace: 'team', name: 'me', address: '10.77.0.2,fd77::2' };
const directory = [
  { name: 'alice', namespace: 'team', publicKey: KA, allowedIPs: ['10.77.0.3/32'], endpoint: '192.168.1.5:51820' },
  { name: 'bob', namespace: 'other', publicKey: KB, allowedIPs: ['10.77.0.4/32'] },
] as never[];
const device = [
  { publicKey: KB, endpoint: null, allowedIPs: ['10.77.0.4/32'], latestHandshake: 0, rxBytes: 0, txBytes: 0, persistentKeepalive: 25 },
  { publicKey: KA, endpoint: '203.0.113.7:40000', allowedIPs: ['10.77.0.3/32'], latestHandshake: Date.parse('2026-01-01T00:00:00Z'), rxBytes: 2048, txBytes: 100, persistentKeepalive: 25 },
  { publicKey: KC, endpoint: null, allowedIPs: [], latestHandshake: 0, rxBytes: 0, txBytes: 0, persistentKeepalive: 0 },
];
const path: PathStatus = { peerId: 'alice', kind: 'direct', via: 'udp', endpoint: '203.0.113.7:40000', rttMs: 3.4, establishMs: 812, selectedAt: 1, switches: 1, pairs: [] };

describe('parseNatFlags', () => {
  it('is undefined without any NAT flag (behaviour as before)', () => {
    expect(parseNatFlags({ stun: [], turn: [] })).toBeUndefined();
  });
  it('accepts the documented forms', () => {
    expect(parseNatFlags({ stun: ['stun:192.0.2.1:3478', '[2001:db8::1]:3478'], turn: ['turn:u:p@192.0.2.1:3478'], relay: 'tcp://192.0.2.9:7000', relayToken: 't' })).toEqual({
      stunServers: ['stun:192.0.2.1:3478', '[2001:db8::1]:3478'],
      turnServers: ['turn:u:p@192.0.2.1:3478'],
      relayUrl: 'tcp://192.0.2.9:7000',
      relayToken: 't',
      ice: false,
    });
  });
  it('rejects malformed servers without echoing the TURN password', () => {
    expect(() => parseNatFlags({ stun: ['stun.example.com:3478'] })).toThrow(/stun:IP:PORT/);
    expect(() => parseNatFlags({ turn: ['turn:user:secretpw@host'] })).toThrow(/turn:USER:PASS@IP:PORT/);
    try {
      parseNatFlags({ turn: ['turn:user:secretpw@host'] });
    } catch (e) {
      expect(String((e as Error).message)).not.toContain('secretpw');
    }
    expect(() => parseNatFlags({ relay: 'http://1.2.3.4:80' })).toThrow(/tcp:\/\/IP:PORT/);
    expect(() => parseNatFlags({ relayToken: 't' })).toThrow(/--relay/);
    expect(() => parseNatFlags({ ice: true })).toThrow(/--stun/);
  });
});

describe('buildStatus', () => {
  it('names device peers from the directory and attaches NAT paths by name within our namespace', () => {
    const s = buildStatus({ id: 'lt-1', name: 'me', agent, now: Date.parse('2026-01-01T00:00:05Z'), listenPort: 51820, directory, device, paths: [path, { ...path, peerId: 'bob' }], candidates: [{ type: 'srflx', address: '198.51.100.1', port: 1 }] });
    expect(s.natTraversal).toBe(true);
    expect(s.peers.map((p) => p.name)).toEqual(['alice', 'bob', null]);
    expect(s.peers[0]).toEqual({
      name: 'alice',
      namespace: 'team',
      publicKey: KA,
      endpoint: '203.0.113.7:40000',
      latestHandshake: '2026-01-01T00:00:00.000Z',
      rxBytes: 2048,
      txBytes: 100,
      path: { kind: 'direct', via: 'udp', rttMs: 3.4, establishMs: 812, switches: 1 },
    });
    // bob is in another namespace: the NAT layer does not manage him even if a peer id collides.
    expect(s.peers[1]!.path).toEqual({ kind: null, via: null, rttMs: null, establishMs: null, switches: 0 });
    expect(s.peers[1]!.latestHandshake).toBeNull();
    expect(s.candidates).toHaveLength(1);
  });
  it('has no path fields when NAT traversal is off, and no key material', () => {
    const s = buildStatus({ id: 'lt-1', name: 'me', agent, now: 0, listenPort: 1, directory, device });
    expect(s.natTraversal).toBe(false);
    expect(s.peers.every((p) => p.path === undefined)).toBe(true);
    expect(Object.keys(s)).not.toContain('privateKey');
    expect(JSON.stringify(s)).not.toMatch(/private/i);
  });
});

describe('statusRows', () => {
  it('formats one row per peer with path, RTT and time to establish', () => {
    const now = Date.parse('2026-01-01T00:00:05Z');
    const s = buildStatus({ id: 'lt-1', name: 'me', agent, now, listenPort: 1, directory, device, paths: [path] });
    const rows = statusRows([s], now);
    expect(rows[0]).toEqual({ sandbox: 'me (lt-1)', peer: 'alice', endpoint: '203.0.113.7:40000', handshake: '5s ago', rx: '2.0 KiB', tx: '100 B', path: 'direct/udp', rtt: '3 ms', established: '812 ms' });
    expect(rows[1]).toMatchObject({ peer: 'bob.other', handshake: 'never', path: 'none', rtt: '-' });
    expect(rows[2]!.peer).toBe('CCCCCCCC...');
    const off = statusRows([buildStatus({ id: 'lt-2', name: 'lt-2', agent, now, listenPort: 1, directory: [], device: [] })], now);
    expect(off).toEqual([{ sandbox: 'lt-2', peer: '(no peers)', endpoint: '-', handshake: '-', rx: '-', tx: '-', path: '-', rtt: '-', established: '-' }]);
  });
});
