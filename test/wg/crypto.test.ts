import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import sodium from 'sodium-native';
import { SodiumCrypto } from '../../src/wg/crypto.js';
import { KDF1, KDF2, KDF3 } from '../../src/wg/noise-helpers.js';

const V = JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8')) as {
  x25519: { scalar: string; u: string; out: string }[];
  x25519dh: Record<string, string>;
  lowOrderPoints: string[];
  chacha20poly1305: Record<string, string>;
  xchacha20poly1305: Record<string, string>;
  blake2s: { input: string; out: string }[];
  kdf: { key: string; input: string; t0: string; t1: string; t2: string }[];
};
const h = (s: string) => new Uint8Array(Buffer.from(s, 'hex'));
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const c = new SodiumCrypto();

describe('X25519 (RFC 7748)', () => {
  it.each(V.x25519)('scalar mult $scalar', (v) => {
    expect(hex(c.dh(h(v.scalar), h(v.u))!)).toBe(v.out);
  });
  it('Diffie-Hellman 6.1', () => {
    const d = V.x25519dh;
    expect(hex(c.publicKey(h(d.alicePriv)))).toBe(d.alicePub);
    expect(hex(c.publicKey(h(d.bobPriv)))).toBe(d.bobPub);
    expect(hex(c.dh(h(d.alicePriv), h(d.bobPub))!)).toBe(d.shared);
    expect(hex(c.dh(h(d.bobPriv), h(d.alicePub))!)).toBe(d.shared);
  });
  it.each(V.lowOrderPoints)('rejects low-order point %s (all-zero shared secret)', (p) => {
    expect(c.dh(c.generatePrivateKey(), h(p))).toBeNull();
  });
});

describe('ChaCha20-Poly1305 (RFC 8439 2.8.2)', () => {
  const v = V.chacha20poly1305;
  it('seals and opens the published vector', () => {
    const ct = new Uint8Array(h(v.plaintext).length + 16);
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(ct, h(v.plaintext), h(v.aad), null, h(v.nonce), h(v.key));
    expect(hex(ct)).toBe(v.ciphertext + v.tag);
    // The same through the in-place data-path primitive.
    const buf = new Uint8Array(ct.length);
    buf.set(h(v.plaintext));
    // sealInPlace has no AAD (transport messages have none), so check it round-trips instead.
    c.sealInPlace(h(v.key), h(v.nonce), buf, h(v.plaintext).length);
    expect(c.openInPlace(h(v.key), h(v.nonce), buf)).toBe(true);
    expect(hex(buf.subarray(0, buf.length - 16))).toBe(v.plaintext);
  });
  it('uses the WireGuard nonce layout (32 zero bits, 64-bit LE counter)', () => {
    const key = c.randomBytes(32);
    const pt = c.randomBytes(40);
    const nonce = h('000000000001020304050000');
    const expected = new Uint8Array(56);
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(expected, pt, null, null, nonce, key);
    expect(hex(c.seal(key, 0x050403020100, pt, null))).toBe(hex(expected));
  });
  it('refuses a flipped bit', () => {
    const key = c.randomBytes(32);
    const ct = c.seal(key, 7, c.randomBytes(30), null);
    ct[3] ^= 1;
    expect(c.open(key, 7, ct, null)).toBeNull();
  });
});

describe('XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha A.3.1)', () => {
  const v = V.xchacha20poly1305;
  it('seals and opens the published vector', () => {
    const ct = c.xseal(h(v.key), h(v.nonce), h(v.plaintext), h(v.aad));
    expect(hex(ct)).toBe(v.ciphertext + v.tag);
    expect(hex(c.xopen(h(v.key), h(v.nonce), ct, h(v.aad))!)).toBe(v.plaintext);
    expect(c.xopen(h(v.key), h(v.nonce), ct, h('00'))).toBeNull();
  });
});

describe('BLAKE2s (RFC 7693) and the WireGuard KDF', () => {
  it.each(V.blake2s)('hash $input', (v) => {
    expect(hex(c.hash(h(v.input)))).toBe(v.out);
  });
  it('keyed BLAKE2s-128 is the 16-byte keyed hash', () => {
    expect(c.mac(h('00'.repeat(32)), h('')).length).toBe(16);
  });
  it.each(V.kdf)('KDF1/2/3 key=$key', (v) => {
    const [t0, t1, t2] = KDF3(c, h(v.key), h(v.input));
    expect([hex(t0), hex(t1), hex(t2)]).toEqual([v.t0, v.t1, v.t2]);
    expect(KDF2(c, h(v.key), h(v.input)).map(hex)).toEqual([v.t0, v.t1]);
    expect(hex(KDF1(c, h(v.key), h(v.input)))).toBe(v.t0);
  });
});
