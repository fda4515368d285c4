/** The HKDF construction of the whitepaper (section 5.4), over HMAC-BLAKE2s. */
import type { Crypto } from './crypto.js';

const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);
const THREE = Uint8Array.of(3);

export function KDF1(c: Crypto, key: Uint8Array, input: Uint8Array): Uint8Array {
  const t0 = c.hmac(key, input);
  const t1 = c.hmac(t0, ONE);
  t0.fill(0);
  return t1;
}

export function KDF2(c: Crypto, key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const t0 = c.hmac(key, input);
  const t1 = c.hmac(t0, ONE);
  const t2 = c.hmac(t0, t1, TWO);
  t0.fill(0);
  return [t1, t2];
}

export function KDF3(c: Crypto, key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const t0 = c.hmac(key, input);
  const t1 = c.hmac(t0, ONE);
  const t2 = c.hmac(t0, t1, TWO);
  const t3 = c.hmac(t0, t2, THREE);
  t0.fill(0);
  return [t1, t2, t3];
}

export function mixHash(c: Crypto, h: Uint8Array, data: Uint8Array): Uint8Array {
  return c.hash(h, data);
}

export function mixKey(c: Crypto, chainKey: Uint8Array, data: Uint8Array): Uint8Array {
  return KDF1(c, chainKey, data);
}
