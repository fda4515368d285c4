import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { LatticeError } from '../errors.js';

/**
 * Agent JWTs: HS256 with the cluster's shared secret. Verification pins the algorithm list to HS256,
 * so `alg: none`, HS512 or an RS/ES token signed with some public key are refused before any key is used.
 */

export const JWT_ALG = 'HS256';

export interface AgentClaims {
  /** agent id */
  sub: string;
  ns: string;
  tools: string[];
  /** namespaces the agent may reach besides its own */
  nsa: string[];
  /** WireGuard public key (base64) */
  wgpk: string;
  /** agent name within its namespace */
  name: string;
  jti: string;
  iss: string;
  iat: number;
  exp: number;
}

/** A JWT is malformed, lacks the lattice claims, has expired or uses another algorithm than HS256 (code EJWT). */
export class JwtError extends LatticeError {
  override readonly name = 'JwtError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EJWT', message, options);
  }
}

/** An HS256 agent JWT (RFC 7519) for claims `c`, issued at `opts.now` (ms) for `opts.ttlMs`; expiresAt in ms. */
export async function signAgentJwt(
  secret: Uint8Array,
  c: { agentId: string; namespace: string; name: string; tools: string[]; allowedNamespaces: string[]; publicKey: string; jti: string },
  opts: { issuer: string; now: number; ttlMs: number },
): Promise<{ jwt: string; expiresAt: number }> {
  const iat = Math.floor(opts.now / 1000);
  const exp = iat + Math.floor(opts.ttlMs / 1000);
  const jwt = await new SignJWT({ ns: c.namespace, name: c.name, tools: c.tools, nsa: c.allowedNamespaces, wgpk: c.publicKey })
    .setProtectedHeader({ alg: JWT_ALG, typ: 'JWT' })
    .setSubject(c.agentId)
    .setJti(c.jti)
    .setIssuer(opts.issuer)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(secret);
  return { jwt, expiresAt: exp * 1000 };
}

/** Verify signature (HS256 only), issuer and expiry; return the claims. */
export async function verifyAgentJwt(secret: Uint8Array, jwt: string, opts: { issuer: string; now?: number }): Promise<AgentClaims> {
  if (typeof jwt !== 'string' || jwt.length > 8192) throw new JwtError('malformed JWT');
  try {
    const { payload } = await jwtVerify(jwt, secret, {
      algorithms: [JWT_ALG],
      issuer: opts.issuer,
      currentDate: opts.now === undefined ? undefined : new Date(opts.now),
      requiredClaims: ['sub', 'jti', 'exp', 'iss'],
    });
    const p = payload as Partial<AgentClaims>;
    if (typeof p.ns !== 'string' || typeof p.wgpk !== 'string' || !Array.isArray(p.tools)) throw new JwtError('JWT lacks lattice claims');
    return p as AgentClaims;
  } catch (err) {
    if (err instanceof JwtError) throw err;
    if (err instanceof joseErrors.JWTExpired) throw new JwtError('JWT has expired', { cause: err });
    if (err instanceof joseErrors.JOSEAlgNotAllowed) throw new JwtError('JWT algorithm not allowed (HS256 only)', { cause: err });
    throw new JwtError(`invalid JWT: ${(err as Error).message}`, { cause: err });
  }
}
