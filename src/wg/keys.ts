/** Key encoding as wg(8) prints it: standard base64 of 32 bytes. */
import type { Crypto } from './crypto.js';
import { clampPrivateKey } from './crypto.js';

export class KeyFormatError extends Error {
  readonly code = 'EWG_KEY';
  override readonly name = 'KeyFormatError';
}

export function encodeKey(k: Uint8Array): string {
  return Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString('base64');
}

/** Decode a wg(8) key; throws KeyFormatError (local config, never network input). */
export function decodeKey(s: string): Uint8Array {
  const t = s.trim();
  if (!/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(t)) {
    throw new KeyFormatError('a key must be 44 characters of base64 encoding 32 bytes (as printed by `wg genkey`)');
  }
  return new Uint8Array(Buffer.from(t, 'base64'));
}

export function generatePrivateKey(c: Crypto): string {
  return encodeKey(c.generatePrivateKey());
}

export function publicKeyOf(c: Crypto, privateKeyB64: string): string {
  // wg(8) clamps on use, so an unclamped private key yields the same public key.
  return encodeKey(c.publicKey(clampPrivateKey(decodeKey(privateKeyB64))));
}
