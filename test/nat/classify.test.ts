import { describe, expect, it } from 'vitest';
import { hostCandidates, parseServer } from '../../src/nat/discovery.js';
import { iceServerFromUrl, validIceSignal } from '../../src/nat/ice.js';
import { classify, endpointPath, PacketKind } from '../../src/nat/path-bind.js';
import { encodeStun, StunClass } from '../../src/nat/stun.js';

const bytes = (...b: number[]) => new Uint8Array(b);

describe('classify', () => {
  it.each([
    ['initiation', bytes(1, 0, 0, 0, 9, 9), PacketKind.WireGuard],
    ['response', bytes(2, 0, 0, 0), PacketKind.WireGuard],
    ['cookie reply', bytes(3, 0, 0, 0), PacketKind.WireGuard],
    ['transport', bytes(4, 0, 0, 0, 1, 2, 3), PacketKind.WireGuard],
    ['type 5', bytes(5, 0, 0, 0), PacketKind.Garbage],
    ['type 0', bytes(0, 0, 0, 0), PacketKind.Garbage],
    ['reserved set', bytes(1, 0, 0, 1), PacketKind.Garbage],
    ['too short', bytes(1, 0, 0), PacketKind.Garbage],
    ['empty', bytes(), PacketKind.Garbage],
    ['STUN request', encodeStun({ class: StunClass.Request, transactionId: new Uint8Array(12) }), PacketKind.Stun],
    ['STUN response', encodeStun({ class: StunClass.SuccessResponse, transactionId: new Uint8Array(12), xorMappedAddress: { address: '1.2.3.4', port: 5 } }), PacketKind.Stun],
  ])('%s', (_name, b, kind) => {
    expect(classify(b)).toBe(kind);
  });

  it('rejects STUN-like bytes with the wrong cookie, top bits or length alignment', () => {
    const s = encodeStun({ class: StunClass.Request, transactionId: new Uint8Array(12) });
    const cookie = Uint8Array.from(s);
    cookie[7] = 0x43;
    const top = Uint8Array.from(s);
    top[0] |= 0x40;
    const len = Uint8Array.from(s);
    len[3] = 2;
    for (const b of [cookie, top, len, s.subarray(0, 19)]) expect(classify(b)).toBe(PacketKind.Garbage);
  });
});

describe('configuration parsing', () => {
  it('parses STUN server forms', () => {
    expect(parseServer('stun:198.18.0.1:3478')).toEqual({ address: '198.18.0.1', port: 3478 });
    expect(parseServer('198.18.0.1')).toEqual({ address: '198.18.0.1', port: 3478 });
    expect(parseServer('[2001:db8::1]:19302')).toEqual({ address: '2001:db8::1', port: 19302 });
  });

  it('parses TURN URLs into node-datachannel ice servers', () => {
    expect(iceServerFromUrl('turn:u:p%40ss@198.18.0.1:3478?transport=tcp')).toEqual({
      hostname: '198.18.0.1',
      port: 3478,
      username: 'u',
      password: 'p@ss',
      relayType: 'TurnTcp',
    });
    expect(iceServerFromUrl('stun:198.18.0.1:3478')).toBe('stun:198.18.0.1:3478');
  });

  it('validates ICE signals from the wire', () => {
    expect(validIceSignal({ t: 'request-offer' })).toBe(true);
    expect(validIceSignal({ t: 'sdp', type: 'offer', sdp: 'v=0', gen: 1 })).toBe(true);
    expect(validIceSignal({ t: 'sdp', type: 'pranswer', sdp: 'v=0', gen: 1 })).toBe(false);
    expect(validIceSignal({ t: 'cand', candidate: 'x'.repeat(5000), mid: '0', gen: 1 })).toBe(false);
    expect(validIceSignal(null)).toBe(false);
  });

  it('names virtual endpoints by scheme and leaves IPv6 addresses direct', () => {
    expect(endpointPath({ kind: 'virtual', scheme: 'relay', peerId: 'bob' })).toEqual({ kind: 'relay', scheme: 'relay', peerId: 'bob' });
    expect(endpointPath({ kind: 'virtual', scheme: 'turn', peerId: 'bob' })).toEqual({ kind: 'relay', scheme: 'turn', peerId: 'bob' });
    expect(endpointPath({ kind: 'virtual', scheme: 'ice', peerId: 'bob' })).toEqual({ kind: 'ice', scheme: 'ice', peerId: 'bob' });
    expect(endpointPath({ address: 'fd00::1', port: 51820 })).toEqual({ kind: 'direct' });
    // An IPv6 address is never mistaken for a virtual path, whatever its text looks like.
    expect(endpointPath({ address: 'fd00::ace:1', port: 0 })).toEqual({ kind: 'direct' });
  });

  it('takes host candidates from non-internal interfaces, without link-local IPv6', () => {
    const c = hostCandidates(51820, {
      lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true, netmask: '', mac: '', cidr: null }],
      eth0: [
        { address: '10.1.2.3', family: 'IPv4', internal: false, netmask: '', mac: '', cidr: null },
        { address: 'fe80::1', family: 'IPv6', internal: false, netmask: '', mac: '', cidr: null, scopeid: 2 },
        { address: '2001:db8::5', family: 'IPv6', internal: false, netmask: '', mac: '', cidr: null, scopeid: 0 },
      ],
    });
    expect(c).toEqual([
      { type: 'host', address: '10.1.2.3', port: 51820 },
      { type: 'host', address: '2001:db8::5', port: 51820 },
    ]);
  });
});
