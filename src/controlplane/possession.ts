import { createHmac, createPrivateKey, createPublicKey, diffieHellman, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Proof of possession of an agent's X25519 (WireGuard) private key, for re-enrollment of an identity
 * that already exists. Whoever knows only the public key (every peer sees it in the directory) cannot
 * answer.
 *
 *   control plane -> launcher   challenge = <issuedAtMs>.<HMAC-SHA256(cpSecret, "chal" ‖ ns ‖ name ‖ pk ‖ issuedAtMs)>
 *                               key       = the control plane's static X25519 public key
 *   launcher -> control plane   proof     = HMAC-SHA256(X25519(agentPriv, cpPub), "lattice-reenroll-v1" ‖ challenge ‖ ns ‖ name ‖ pk)
 *   control plane checks        the challenge is its own and younger than CHALLENGE_TTL_MS, and
 *                               proof == HMAC-SHA256(X25519(cpPriv, agentPub), ...)   (static-static DH as a MAC key)
 *
 * Stateless on the control plane (the challenge authenticates itself), so any instance can check it.
 * A challenge may be answered more than once within its lifetime; only the key holder can answer it,
 * and NATS auth keeps enrollment replies away from everyone else. Pure: bytes and `now` in.
 */
export const CHALLENGE_TTL_MS = 60_000;

export interface PossessionSubject {
  namespace: string;
  name: string;
  /** WireGuard public key, base64. */
  publicKey: string;
}

export interface Challenge {
  nonce: string;
  /** The control plane's X25519 public key, base64. */
  key: string;
  /** The namespace the proof is bound to (the token's). */
  namespace: string;
}

const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');
const sep = '\u0000';

/** X25519 shared secret of raw 32-byte keys (RFC 7748); null if either key is malformed. */
export function x25519(privateKey: Uint8Array, publicKey: Uint8Array): Buffer | null {
  if (privateKey.length !== 32 || publicKey.length !== 32) return null;
  try {
    return diffieHellman({
      privateKey: createPrivateKey({ key: Buffer.concat([PKCS8_X25519, privateKey]), format: 'der', type: 'pkcs8' }),
      publicKey: createPublicKey({ key: Buffer.concat([SPKI_X25519, publicKey]), format: 'der', type: 'spki' }),
    });
  } catch {
    return null;
  }
}

/** The X25519 public key (32 bytes, RFC 7748) of a 32-byte private key. */
export function x25519PublicKey(privateKey: Uint8Array): Buffer {
  const pub = createPublicKey(createPrivateKey({ key: Buffer.concat([PKCS8_X25519, privateKey]), format: 'der', type: 'pkcs8' }));
  return pub.export({ format: 'der', type: 'spki' }).subarray(SPKI_X25519.length);
}

export const newX25519PrivateKey = (): Buffer => randomBytes(32);

const subjectBytes = (s: PossessionSubject) => [s.namespace, s.name, s.publicKey].join(sep);

/** A stateless challenge for `s`: `<nowMs>.<HMAC-SHA256(secret, subject, nowMs), base64url>`. */
export function makeChallenge(secret: Uint8Array, s: PossessionSubject, nowMs: number): string {
  const mac = createHmac('sha256', secret).update(`chal${sep}${subjectBytes(s)}${sep}${nowMs}`).digest('base64url');
  return `${nowMs}.${mac}`;
}

/** True when `challenge` came from makeChallenge for `s` with this secret and is not stale at `nowMs`; never throws. */
export function checkChallenge(secret: Uint8Array, s: PossessionSubject, challenge: unknown, nowMs: number): boolean {
  if (typeof challenge !== 'string' || challenge.length > 100) return false;
  const m = /^(\d{1,16})\.([A-Za-z0-9_-]{43})$/.exec(challenge);
  if (!m) return false;
  const at = Number(m[1]);
  if (at > nowMs + 5_000 || nowMs - at > CHALLENGE_TTL_MS) return false;
  return safeEqual(makeChallenge(secret, s, at), challenge);
}

/** The launcher's answer (also what the control plane recomputes from its side of the DH). */
export function proofOf(shared: Uint8Array, challenge: string, s: PossessionSubject): string {
  return createHmac('sha256', shared).update(`lattice-reenroll-v1${sep}${challenge}${sep}${subjectBytes(s)}`).digest('base64url');
}

/** Launcher side: answer `c` with the agent's private key (base64, as wg genkey prints it). */
export function answerChallenge(privateKeyB64: string, c: Challenge, s: PossessionSubject): string | null {
  const shared = x25519(Buffer.from(privateKeyB64, 'base64'), Buffer.from(c.key, 'base64'));
  return shared ? proofOf(shared, c.nonce, s) : null;
}

/** Control-plane side: is `proof` the answer to `challenge` by the holder of s.publicKey's private key? */
export function checkProof(cpPrivateKey: Uint8Array, challenge: string, proof: unknown, s: PossessionSubject): boolean {
  if (typeof proof !== 'string' || proof.length !== 43) return false;
  const shared = x25519(cpPrivateKey, Buffer.from(s.publicKey, 'base64'));
  if (!shared || shared.every((b) => b === 0)) return false;
  return safeEqual(proofOf(shared, challenge, s), proof);
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
