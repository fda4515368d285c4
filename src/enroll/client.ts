import { connect, jwtAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import { LatticeError } from '../errors.js';
import { answerChallenge, type Challenge } from '../controlplane/possession.js';
import { CpErrorCode, SUBJECTS, type EnrollResponse, type ErrorReply, type Peer } from '../controlplane/types.js';

/**
 * Launcher side of the control plane's NATS request/reply API: enroll with a one-time token, publish
 * the WireGuard endpoint, fetch a directory snapshot. Every call takes either a connection to reuse or
 * the control plane's NATS URL (connected and closed around the call).
 */

/** The control plane refused a request; `code` is one of CpErrorCode (ETOKEN_EXPIRED, EREVOKED, ...). */
export class EnrollError extends LatticeError {
  override readonly name = 'EnrollError';
  constructor(
    override readonly code: CpErrorCode,
    message: string,
    /** ECHALLENGE: what to answer with the private key (controlplane/possession.ts). */
    readonly challenge?: Challenge,
  ) {
    super(code, message);
  }
}

export class ControlPlaneUnreachableError extends LatticeError {
  override readonly name = 'ControlPlaneUnreachableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ECP_UNREACHABLE', message, options);
  }
}

/** A NATS user (operator mode): its JWT, the nkey seed that signs the server's nonce, its inbox prefix. */
export interface NatsUser {
  jwt: string;
  seed: string;
  inboxPrefix: string;
}

/** Connection options that authenticate as `user` (none: anonymous, for a control plane without NATS auth). */
export function natsUserOptions(user?: NatsUser): Partial<ConnectionOptions> {
  if (!user) return {};
  return { authenticator: jwtAuthenticator(user.jwt, new TextEncoder().encode(user.seed)), inboxPrefix: user.inboxPrefix };
}

export type Target = { nc: NatsConnection } | { controlPlaneUrl: string; user?: NatsUser };

export interface EnrollOptions {
  token: string;
  name: string;
  /** WireGuard public key, base64. */
  publicKey: string;
  /** host:port of the launcher's WireGuard UDP socket, if known. */
  endpoint?: string;
  /** nkey user public key for the launcher's own NATS user (sent when the control plane runs NATS auth). */
  natsPublicKey?: string;
  /** The WireGuard private key (base64): answers a re-enrollment challenge; never sent. */
  privateKey?: string;
  timeoutMs?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

async function withConnection<T>(t: Target, fn: (nc: NatsConnection, url: string) => Promise<T>): Promise<T> {
  if ('nc' in t) return fn(t.nc, t.nc.getServer());
  let nc: NatsConnection;
  try {
    nc = await connect({ servers: t.controlPlaneUrl, name: 'lattice-launcher', timeout: 5000, maxReconnectAttempts: 3, ...natsUserOptions(t.user) });
  } catch (err) {
    // With a NATS user of our own, the server refusing it means the agent was revoked (or the JWT expired).
    if (t.user && /authorization violation|authentication/i.test(String((err as Error).message))) {
      throw new EnrollError(CpErrorCode.Revoked, `the control plane at ${t.controlPlaneUrl} refused this launcher's NATS credentials: the agent has been revoked or its credentials expired; enroll a new name with a new token`);
    }
    throw new ControlPlaneUnreachableError(`cannot reach the control plane at ${t.controlPlaneUrl}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return await fn(nc, t.controlPlaneUrl);
  } finally {
    await nc.close().catch(() => undefined);
  }
}

async function request<T>(t: Target, subject: string, body: unknown, timeoutMs = 10_000): Promise<T> {
  return withConnection(t, async (nc, url) => {
    let reply;
    try {
      reply = await nc.request(subject, enc.encode(JSON.stringify(body)), { timeout: timeoutMs });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '503') throw new ControlPlaneUnreachableError(`no control plane is serving ${subject} on ${url}; start one with: lattice control-plane start`, { cause: err });
      if (code === 'TIMEOUT') throw new ControlPlaneUnreachableError(`the control plane at ${url} did not answer ${subject} within ${timeoutMs} ms`, { cause: err });
      throw new ControlPlaneUnreachableError(`request to the control plane at ${url} failed: ${(err as Error).message}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(dec.decode(reply.data));
    } catch (err) {
      throw new LatticeError('ECP_REPLY', `the control plane at ${url} sent a reply that is not JSON`, { cause: err });
    }
    const e = (parsed as Partial<ErrorReply>)?.error;
    if (e && typeof e.code === 'string') {
      const c = e.challenge;
      const ok = c && typeof c.nonce === 'string' && typeof c.key === 'string' && typeof c.namespace === 'string';
      throw new EnrollError(e.code, String(e.message), ok ? { nonce: c.nonce, key: c.key, namespace: c.namespace } : undefined);
    }
    return parsed as T;
  });
}

/**
 * Enroll: token + public key + name -> identity, address, peers, policy, JWT. When the identity exists
 * already (a retry after a crash), the control plane answers ECHALLENGE; with `privateKey` the
 * challenge is answered once (proof of possession) and the request repeated.
 */
export async function enroll(opts: EnrollOptions & Target): Promise<EnrollResponse> {
  const { token, name, publicKey, endpoint, natsPublicKey } = opts;
  const body = { token, name, publicKey, ...(endpoint ? { endpoint } : {}), ...(natsPublicKey ? { natsPublicKey } : {}) };
  try {
    return await request<EnrollResponse>(opts, SUBJECTS.enroll, body, opts.timeoutMs);
  } catch (err) {
    if (!(err instanceof EnrollError && err.code === CpErrorCode.Challenge && err.challenge && opts.privateKey)) throw err;
    const c = err.challenge;
    const proof = answerChallenge(opts.privateKey, c, { namespace: c.namespace, name, publicKey });
    if (!proof) throw err;
    return request<EnrollResponse>(opts, SUBJECTS.enroll, { ...body, challenge: c.nonce, proof }, opts.timeoutMs);
  }
}

/** Publish where this agent's WireGuard socket can be reached (host:port). Peers see it via the directory. */
export function updateEndpoint(opts: { jwt: string; endpoint: string; timeoutMs?: number } & Target): Promise<{ endpoint: string }> {
  return request(opts, SUBJECTS.endpoint, { jwt: opts.jwt, endpoint: opts.endpoint }, opts.timeoutMs);
}

/** Current peers and policy for a stored identity (on restart, before the watcher catches up). */
export function fetchDirectory(opts: { jwt: string; timeoutMs?: number } & Target): Promise<{ self: Peer; peers: Peer[]; policy: unknown }> {
  return request(opts, SUBJECTS.directory, { jwt: opts.jwt }, opts.timeoutMs);
}
