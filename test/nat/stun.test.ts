import { describe, expect, it } from 'vitest';
import { seededRandom } from '../support/random.js';
import {
  decodeStun,
  encodeStun,
  looksLikeStun,
  mappedAddress,
  StunClass,
  StunDropReason,
  verifyIntegrity,
  type StunMessage,
} from '../../src/nat/stun.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

// RFC 5769 section 2.2: sample IPv4 response (SOFTWARE "test vector", password "VOkJxbRl1RmTxUk/WvJxBt").
const rfc5769Ipv4Response = hex(`
  0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200008 0001a147 e112a643
  00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280004 c07d4c96`);
const rfc5769Password = 'VOkJxbRl1RmTxUk/WvJxBt';
const txid = hex('b7e7a701bc34d686fa87dfae');

function ok(m: StunMessage | string): StunMessage {
  if (typeof m === 'string') throw new Error(`dropped: ${m}`);
  return m;
}

describe('STUN codec', () => {
  it('decodes the RFC 5769 IPv4 response: mapped address, integrity, fingerprint', () => {
    const m = ok(decodeStun(rfc5769Ipv4Response));
    expect(m.class).toBe(StunClass.SuccessResponse);
    expect(m.method).toBe(1);
    expect(m.software).toBe('test vector');
    expect(mappedAddress(m)).toEqual({ address: '192.0.2.1', port: 32853 });
    expect(m.hasFingerprint).toBe(true);
    expect(verifyIntegrity(m, rfc5769Password)).toBe(true);
    expect(verifyIntegrity(m, 'wrong')).toBe(false);
  });

  it('decodes a coturn response held in a Buffer without touching its bytes', () => {
    // Captured from coturn 4.6.1: XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, RESPONSE-ORIGIN, SOFTWARE, FINGERPRINT.
    const h =
      '010100442112a4420303030303030303030303030020000800019d105e12a443000100080001bc027f000001802b000800010d967f00000180220014436f7475726e2d342e362e312027476f7273742780280004d6812b85';
    const b = Buffer.from(h, 'hex');
    const m = ok(decodeStun(b));
    expect(m.xorMappedAddress).toEqual({ address: '127.0.0.1', port: 48130 });
    expect(m.hasFingerprint).toBe(true);
    expect(b.toString('hex')).toBe(h);
  });

  it('re-encodes the RFC 5769 response byte for byte', () => {
    const out = encodeStun({
      class: StunClass.SuccessResponse,
      transactionId: txid,
      software: 'test vector',
      xorMappedAddress: { address: '192.0.2.1', port: 32853 },
      integrityKey: rfc5769Password,
      fingerprint: true,
    });
    // Our SOFTWARE padding is zeros where the vector has a space; compare everything else.
    const want = Uint8Array.from(rfc5769Ipv4Response);
    want[35] = 0;
    const o = Uint8Array.from(out);
    // Integrity and fingerprint cover the padding byte, so check them by decoding instead.
    expect(o.subarray(0, 36)).toEqual(want.subarray(0, 36));
    expect(o.subarray(36, 48)).toEqual(want.subarray(36, 48));
    const m = ok(decodeStun(out));
    expect(verifyIntegrity(m, rfc5769Password)).toBe(true);
    expect(m.hasFingerprint).toBe(true);
  });

  it('round-trips IPv6 XOR-MAPPED-ADDRESS and requests with USERNAME', () => {
    const t = seededRandom().bytes(12);
    const m = ok(
      decodeStun(
        encodeStun({
          class: StunClass.SuccessResponse,
          transactionId: t,
          xorMappedAddress: { address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 },
        }),
      ),
    );
    expect(m.xorMappedAddress).toEqual({ address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 });
    expect(m.transactionId).toEqual(t);
    const r = ok(decodeStun(encodeStun({ class: StunClass.Request, transactionId: t, username: 'abc:def', integrityKey: 'pw', fingerprint: true })));
    expect(r.class).toBe(StunClass.Request);
    expect(r.username).toBe('abc:def');
    expect(verifyIntegrity(r, 'pw')).toBe(true);
  });

  it('drops hostile input with a reason, never throws', () => {
    const good = encodeStun({ class: StunClass.Request, transactionId: txid, username: 'a:b', fingerprint: true });
    expect(decodeStun(good.subarray(0, 10))).toBe(StunDropReason.TooShort);
    const badCookie = Uint8Array.from(good);
    badCookie[5] ^= 1;
    expect(decodeStun(badCookie)).toBe(StunDropReason.NotStun);
    const badLen = Uint8Array.from(good);
    badLen[3] += 4;
    expect(decodeStun(badLen)).toBe(StunDropReason.BadLength);
    const badFp = Uint8Array.from(good);
    badFp[badFp.length - 1] ^= 1;
    expect(decodeStun(badFp)).toBe(StunDropReason.BadFingerprint);
    const tampered = Uint8Array.from(good);
    tampered[25] ^= 1; // inside USERNAME: the fingerprint no longer matches
    expect(decodeStun(tampered)).toBe(StunDropReason.BadFingerprint);
    // An attribute whose length runs past the end.
    const overrun = encodeStun({ class: StunClass.Request, transactionId: txid, username: 'abcd' });
    overrun[23] = 200;
    expect(decodeStun(overrun)).toBe(StunDropReason.BadAttribute);
    // Fuzz: random bytes with a valid header never throw.
    const rnd = seededRandom();
    for (let i = 0; i < 5000; i++) {
      const n = 20 + 4 * rnd.int(20);
      const b = rnd.bytes(n);
      b.set(good.subarray(0, 8));
      b[2] = (n - 20) >> 8;
      b[3] = (n - 20) & 0xff;
      expect(() => decodeStun(b)).not.toThrow();
    }
  });

  it('looksLikeStun matches STUN and not WireGuard', () => {
    expect(looksLikeStun(rfc5769Ipv4Response)).toBe(true);
    const wg = new Uint8Array(148);
    wg[0] = 1;
    expect(looksLikeStun(wg)).toBe(false);
  });
});
