/**
 * The crypto seam of the WireGuard device. The protocol code only calls this interface, so a test can
 * inject deterministic randomness. The implementation uses sodium-native (X25519, ChaCha20-Poly1305,
 * XChaCha20-Poly1305: native code) and @noble/hashes (BLAKE2s and HMAC-BLAKE2s: handshake-only, so pure JS is fine).
 */
import sodium from 'sodium-native';
import { createRequire } from 'node:module';
import { blake2s } from '@noble/hashes/blake2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { Blake2sMacSize, ChaChaPolyTagSize } from './constants.js';

export interface Crypto {
  randomBytes(n: number): Uint8Array;
  /** A fresh clamped Curve25519 private key. */
  generatePrivateKey(): Uint8Array;
  publicKey(privateKey: Uint8Array): Uint8Array;
  /** X25519; null when the shared secret is all zeros (the peer sent a low-order point). */
  dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | null;
  /** ChaCha20-Poly1305 (IETF) with the WireGuard nonce: 32 zero bits then the 64-bit little-endian counter. */
  seal(key: Uint8Array, counter: number, plaintext: Uint8Array, ad: Uint8Array | null): Uint8Array;
  open(key: Uint8Array, counter: number, ciphertext: Uint8Array, ad: Uint8Array | null): Uint8Array | null;
  xseal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array | null): Uint8Array;
  xopen(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array | null): Uint8Array | null;
  /** BLAKE2s-256 over the concatenation of the parts. */
  hash(...parts: Uint8Array[]): Uint8Array;
  /** HMAC-BLAKE2s-256. */
  hmac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array;
  /** Keyed BLAKE2s-128 (WireGuard's MAC). */
  mac(key: Uint8Array, data: Uint8Array): Uint8Array;
  /**
   * Data-path seal in place: `buf[0..len)` is encrypted where it lies and the tag written at `buf[len..len+16)`.
   * `nonce` is the 12-byte transport nonce already filled by the caller.
   */
  sealInPlace(key: Uint8Array, nonce: Uint8Array, buf: Uint8Array, len: number): void;
  /** Data-path open in place: `buf` holds ciphertext||tag; on success the plaintext is `buf[0..len-16)`. */
  openInPlace(key: Uint8Array, nonce: Uint8Array, buf: Uint8Array): boolean;
  zero(b: Uint8Array): void;
}

/**
 * The data path calls sodium-native's raw binding when it is there: the public wrapper re-checks every
 * argument (about 0.5-1 us per call) and throws on a failed tag, which would make a flood of forged
 * packets pay for an exception each. Sizes are guaranteed by the callers below. Falls back to the wrapper.
 */
type RawDetached = (a: Uint8Array, b: Uint8Array, c: Uint8Array, ad: undefined, npub: Uint8Array, k: Uint8Array) => number;
const raw = ((): { seal: RawDetached; open: RawDetached } | undefined => {
  try {
    const b = createRequire(import.meta.url)('sodium-native/binding.js') as Record<string, unknown>;
    const seal = b.crypto_aead_chacha20poly1305_ietf_encrypt_detached;
    const open = b.crypto_aead_chacha20poly1305_ietf_decrypt_detached;
    if (typeof seal === 'function' && typeof open === 'function') return { seal: seal as RawDetached, open: open as RawDetached };
  } catch {
    // Not the layout we know: use the checked wrapper.
  }
  return undefined;
})();

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function clampPrivateKey(k: Uint8Array): Uint8Array {
  k[0] &= 248;
  k[31] = (k[31] & 127) | 64;
  return k;
}

function putCounter(nonce: Uint8Array, counter: number): Uint8Array {
  nonce.fill(0);
  const lo = counter >>> 0;
  const hi = Math.floor(counter / 0x1_0000_0000) >>> 0;
  nonce[4] = lo;
  nonce[5] = lo >>> 8;
  nonce[6] = lo >>> 16;
  nonce[7] = lo >>> 24;
  nonce[8] = hi;
  nonce[9] = hi >>> 8;
  nonce[10] = hi >>> 16;
  nonce[11] = hi >>> 24;
  return nonce;
}

export class SodiumCrypto implements Crypto {
  /** The 12-byte nonce of seal/open, rebuilt on every call (per instance, not shared at module level). */
  private readonly nonceScratch = new Uint8Array(12);

  randomBytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    sodium.randombytes_buf(b);
    return b;
  }
  generatePrivateKey(): Uint8Array {
    return clampPrivateKey(this.randomBytes(32));
  }
  publicKey(privateKey: Uint8Array): Uint8Array {
    const q = new Uint8Array(32);
    sodium.crypto_scalarmult_base(q, privateKey);
    return q;
  }
  dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | null {
    if (privateKey.length !== 32 || publicKey.length !== 32) return null;
    const q = new Uint8Array(32);
    try {
      // libsodium returns -1 (sodium-native throws) when the result is all zeros: a low-order point.
      sodium.crypto_scalarmult(q, privateKey, publicKey);
    } catch {
      return null;
    }
    return q;
  }
  seal(key: Uint8Array, counter: number, plaintext: Uint8Array, ad: Uint8Array | null): Uint8Array {
    const c = new Uint8Array(plaintext.length + ChaChaPolyTagSize);
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(c, plaintext, ad, null, putCounter(this.nonceScratch, counter), key);
    return c;
  }
  open(key: Uint8Array, counter: number, ciphertext: Uint8Array, ad: Uint8Array | null): Uint8Array | null {
    if (ciphertext.length < ChaChaPolyTagSize) return null;
    const m = new Uint8Array(ciphertext.length - ChaChaPolyTagSize);
    try {
      sodium.crypto_aead_chacha20poly1305_ietf_decrypt(m, null, ciphertext, ad, putCounter(this.nonceScratch, counter), key);
    } catch {
      return null;
    }
    return m;
  }
  xseal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array | null): Uint8Array {
    const c = new Uint8Array(plaintext.length + ChaChaPolyTagSize);
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(c, plaintext, ad, null, nonce, key);
    return c;
  }
  xopen(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array | null): Uint8Array | null {
    if (ciphertext.length < ChaChaPolyTagSize) return null;
    const m = new Uint8Array(ciphertext.length - ChaChaPolyTagSize);
    try {
      sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(m, null, ciphertext, ad, nonce, key);
    } catch {
      return null;
    }
    return m;
  }
  hash(...parts: Uint8Array[]): Uint8Array {
    return blake2s(concat(parts));
  }
  hmac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
    return hmac(blake2s, key, concat(parts));
  }
  mac(key: Uint8Array, data: Uint8Array): Uint8Array {
    return blake2s(data, { key, dkLen: Blake2sMacSize });
  }
  sealInPlace(key: Uint8Array, nonce: Uint8Array, buf: Uint8Array, len: number): void {
    const m = buf.subarray(0, len);
    const mac = buf.subarray(len, len + ChaChaPolyTagSize);
    if (raw && key.length === 32 && nonce.length === 12 && mac.length === ChaChaPolyTagSize) {
      if (raw.seal(m, mac, m, undefined, nonce, key) < 0) throw new Error('could not encrypt data');
      return;
    }
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached(m, mac, m, null, null, nonce, key);
  }
  openInPlace(key: Uint8Array, nonce: Uint8Array, buf: Uint8Array): boolean {
    const len = buf.length - ChaChaPolyTagSize;
    if (len < 0) return false;
    const c = buf.subarray(0, len);
    if (raw && key.length === 32 && nonce.length === 12) return raw.open(c, c, buf.subarray(len), undefined, nonce, key) === 0;
    try {
      sodium.crypto_aead_chacha20poly1305_ietf_decrypt_detached(c, null, c, buf.subarray(len), null, nonce, key);
    } catch {
      return false;
    }
    return true;
  }
  zero(b: Uint8Array): void {
    b.fill(0);
  }
}

export const defaultCrypto: Crypto = new SodiumCrypto();

/** Constant-time equality for MACs and keys. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export function isZero(a: Uint8Array): boolean {
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i];
  return d === 0;
}
