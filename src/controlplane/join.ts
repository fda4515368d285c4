import { LatticeError } from '../errors.js';

/**
 * The join token: everything a launcher on another host needs to enroll, in one string (as `kubeadm
 * join` carries a token and a CA hash):
 *
 *   lt1.<base64url(JSON {token, nats?: {jwt, seed, inboxPrefix}, ca?, urls?})>
 *
 *   token the one-time enrollment token (43 base64url chars; only its SHA-256 is stored)
 *   nats  the token's bootstrap NATS user (it may only request enrollment and read its own replies)
 *   ca    sha256:<hex> of the control plane's CA certificate (DER), pinned by the launcher for TLS
 *         (natsserver/pki.ts, enroll/pin.ts)
 *   urls  the control plane's NATS URLs (nats://HOST:PORT, at most 16), so `--control-plane` may be left out
 *
 * A plain token (no `lt1.`) is still accepted: a control plane on an external NATS without auth.
 * The join token is a secret: whoever holds it can enroll (within the token's limit and lifetime).
 */
export const JOIN_PREFIX = 'lt1.';

export interface JoinToken {
  token: string;
  nats?: { jwt: string; seed: string; inboxPrefix: string };
  ca?: string;
  urls?: string[];
}

/** A join token is damaged: not base64url JSON, or a field missing or malformed (code EJOIN_TOKEN). */
export class JoinTokenError extends LatticeError {
  override readonly name = 'JoinTokenError';
  constructor(message: string) {
    super('EJOIN_TOKEN', message);
  }
}

/** `JOIN_PREFIX` + base64url(JSON of `j`): one string a launcher is given (token, NATS user, CA pin). */
export function encodeJoinToken(j: JoinToken): string {
  return JOIN_PREFIX + Buffer.from(JSON.stringify(j)).toString('base64url');
}

/** Parse a join token or a plain token; throws JoinTokenError (one line) on anything malformed. */
export function parseJoinToken(s: string): JoinToken {
  const t = s.trim();
  if (!t.startsWith(JOIN_PREFIX)) return { token: t };
  let j: Partial<JoinToken>;
  try {
    j = JSON.parse(Buffer.from(t.slice(JOIN_PREFIX.length), 'base64url').toString('utf8')) as Partial<JoinToken>;
  } catch {
    throw new JoinTokenError('the join token is damaged (not base64url JSON); copy it again from `lattice token create`');
  }
  if (typeof j.token !== 'string') throw new JoinTokenError('the join token has no enrollment token; copy it again from `lattice token create`');
  const n = j.nats;
  if (n !== undefined && (typeof n !== 'object' || typeof n.jwt !== 'string' || typeof n.seed !== 'string' || typeof n.inboxPrefix !== 'string')) {
    throw new JoinTokenError('the join token\'s NATS credentials are damaged; copy it again from `lattice token create`');
  }
  if (j.ca !== undefined && (typeof j.ca !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(j.ca))) {
    throw new JoinTokenError('the join token\'s CA pin is not sha256:<64 hex>; copy it again from `lattice token create`');
  }
  const u = j.urls;
  if (u !== undefined && (!Array.isArray(u) || u.length > 16 || !u.every((x) => typeof x === 'string' && /^(nats|tls):\/\/[^\s,/]+$/.test(x)))) {
    throw new JoinTokenError('the join token\'s control-plane URLs are damaged; copy it again from `lattice token create`');
  }
  return { token: j.token, ...(n ? { nats: n } : {}), ...(j.ca ? { ca: j.ca } : {}), ...(u && u.length > 0 ? { urls: u } : {}) };
}
