/**
 * Per-peer relay credentials: what binds a relay peer id to the one peer allowed to claim it.
 *
 *   credential(id) = "lrc1." + base64url( HMAC-SHA256(secret, "lattice relay credential v1" || 0x00 || id) )
 *
 * The relay server holds the secret (32 random bytes or more, base64url; never given to launchers) and checks a
 * Hello's credential against the id it claims. Whoever issues credentials (the relay's operator with
 * `lattice relay credential ID`) gives each peer only its own: a peer holding "alice"'s credential cannot
 * compute "bob"'s, so it cannot claim bob's id and take bob's relayed traffic (issue #12). The credential
 * is a bearer secret: it rides in the Hello over plain TCP, so an on-path observer of that TCP stream can
 * replay it (the WireGuard packets inside stay authenticated end to end either way).
 *
 * Pure: bytes in, strings out; no I/O.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const PREFIX = 'lrc1.';
const LABEL = 'lattice relay credential v1\0';
/** Minimum secret length in bytes. */
export const RelaySecretMinBytes = 32;

/** Decode a relay secret (base64url or base64, at least 32 bytes). Returns undefined when it is not one. */
export function decodeRelaySecret(text: string): Uint8Array | undefined {
  const t = text.trim();
  if (!/^[A-Za-z0-9_\-+/]+={0,2}$/.test(t)) return undefined;
  const b = Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  return b.length >= RelaySecretMinBytes ? new Uint8Array(b) : undefined;
}

/** A fresh relay secret: 32 random bytes, base64url. */
export function newRelaySecret(): string {
  return randomBytes(32).toString('base64url');
}

/** The credential that lets its holder claim `id` on a relay whose secret is `secret`. */
export function relayCredential(secret: Uint8Array, id: string): string {
  return PREFIX + createHmac('sha256', secret).update(LABEL).update(id, 'utf8').digest('base64url');
}

/** True when `presented` (a Hello's payload) is the credential for `id` under `secret`; constant-time. */
export function verifyRelayCredential(secret: Uint8Array, id: string, presented: Uint8Array): boolean {
  const want = Buffer.from(relayCredential(secret, id), 'utf8');
  return presented.length === want.length && timingSafeEqual(presented, want);
}
