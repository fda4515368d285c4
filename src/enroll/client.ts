import { connect, jwtAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import { Backoff, systemTimers, type Timers } from '../backoff.js';
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

/** No control-plane server answered (every URL tried, or the request timed out); code `ECP_UNREACHABLE`. */
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

/**
 * How a launcher reaches the control plane: every NATS URL it knows (tried in turn, reconnects go to any
 * of them and to the servers the cluster announces), its NATS user, and the CA it trusts when the
 * control plane speaks TLS (PEM; from enroll/pin.ts at enrollment, then from the stored credentials).
 */
export interface ControlPlaneEndpoint {
  urls: string[];
  user?: NatsUser;
  caPem?: string;
}

/** nats.js options for `ep`: servers as a list (a comma-joined string is not one) tried in the given order, user, TLS verified against the CA. */
export function endpointOptions(ep: ControlPlaneEndpoint): Partial<ConnectionOptions> {
  return { servers: ep.urls, noRandomize: true, ...natsUserOptions(ep.user), ...(ep.caPem ? { tls: { ca: ep.caPem } } : {}) };
}

/** "nats://a:4222,nats://b:4222" or a list -> the URLs, trimmed, empty ones dropped, each once. */
export function splitUrls(u: string | readonly string[]): string[] {
  return [...new Set((typeof u === 'string' ? u.split(',') : u.flatMap((x) => x.split(','))).map((x) => x.trim()).filter((x) => x.length > 0))];
}

/**
 * The server URLs a live connection has learned from the servers' INFO (connect_urls: the client
 * addresses of every node of a cluster), as nats:// URLs, beside the ones it was given.
 */
export function learnedUrls(nc: NatsConnection, known: readonly string[]): string[] {
  const announced = (nc.info?.connect_urls ?? []).map((hp) => (/^[a-z]+:\/\//i.test(hp) ? hp : `nats://${hp}`));
  return splitUrls([...known, ...announced]);
}

/** The server refused our own NATS user: revoked, or its JWT expired. */
function isAuthRefusal(err: unknown): boolean {
  return /authorization violation|authentication|user authentication revoked/i.test(String((err as Error)?.message));
}

/**
 * Connect a launcher to the control plane at `ep` (a long-lived connection: it reconnects forever, to
 * any known server). Errors: CaPinError-free by then (the CA was pinned at enrollment); EnrollError
 * EREVOKED when the server refuses the launcher's user; ControlPlaneUnreachableError otherwise.
 */
export async function connectControlPlane(ep: ControlPlaneEndpoint, o: { name: string; maxReconnectAttempts?: number; timeoutMs?: number }): Promise<NatsConnection> {
  try {
    // nats.js 2.29 at first connect: a server that fails is dropped from the pool, and when its attempt
    // count reaches a finite maxReconnectAttempts "the current server" is dropped once more, which by
    // then is the next one. At 2 or more (or -1) every URL gets its try.
    const given = o.maxReconnectAttempts ?? -1;
    const attempts = given === -1 ? -1 : Math.max(2, given);
    return await connect({ name: o.name, timeout: o.timeoutMs ?? 5000, maxReconnectAttempts: attempts, reconnectTimeWait: 500, ...endpointOptions(ep) });
  } catch (err) {
    const where = ep.urls.join(',');
    if (ep.user && isAuthRefusal(err)) {
      throw new EnrollError(CpErrorCode.Revoked, `the control plane at ${where} refused this launcher's NATS credentials: the agent has been revoked or its credentials expired; enroll a new name with a new token`);
    }
    if (/CERT|certificate|self.signed|TLS/i.test(String((err as { code?: string })?.code) + String((err as Error)?.message))) {
      throw new ControlPlaneUnreachableError(`the control plane at ${where} failed TLS verification against the CA this launcher pinned (${(err as Error).message}): it is not the control plane this launcher enrolled with`, { cause: err });
    }
    throw new ControlPlaneUnreachableError(`cannot reach the control plane at ${where}: ${(err as Error).message}; is it running (lattice control-plane start)?`, { cause: err });
  }
}

export type Target = { nc: NatsConnection } | { controlPlaneUrl: string | string[]; user?: NatsUser; caPem?: string };

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
  /** Subnets to advertise (CIDRs); they take effect once an operator approves them. */
  advertiseRoutes?: string[];
  /** Offer this peer as an exit node (advertises the default routes; needs approval too). */
  exitNode?: boolean;
  timeoutMs?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

async function withConnection<T>(t: Target, fn: (nc: NatsConnection, url: string) => Promise<T>): Promise<T> {
  if ('nc' in t) return fn(t.nc, t.nc.getServer());
  const urls = splitUrls(t.controlPlaneUrl);
  const nc = await connectControlPlane({ urls, user: t.user, caPem: t.caPem }, { name: 'lattice-launcher', maxReconnectAttempts: 3 });
  try {
    return await fn(nc, urls.join(','));
  } finally {
    await nc.close().catch(() => undefined);
  }
}

/** The launcher's retry of a request the control plane answered EBUSY: 100 ms first, then jittered up to 1 s (a store that did not answer fails after 2 s at the control plane already: controlplane/natskv.ts KV_OP_TIMEOUT_MS). */
export const BUSY_BACKOFF = { initialMs: 100, maxMs: 1000 } as const;

/** Time and chance for `retryWhileBusy`; tests pass manual timers (test/support/timers.ts) and a seeded random. */
export interface RetryClock {
  timers: Timers;
  /** ms, monotonic enough for a deadline. */
  now: () => number;
  /** Floats in [0, 1). */
  random: () => number;
}

const systemClock = (): RetryClock => ({ timers: systemTimers(), now: Date.now, random: Math.random });

/**
 * Call `once(remainingMs)` and repeat it while it throws EnrollError EBUSY (too many requests in flight
 * at the control plane, or its store did not answer because a NATS node died or a leader is being
 * elected: seconds), waiting BUSY_BACKOFF's jittered delays (backoff.ts), until `timeoutMs` has passed
 * since the first attempt; then the last EBUSY is thrown. Any other error is thrown at once. Each attempt
 * gets what is left of the timeout, at least 1 s. Only for calls that are safe to repeat.
 */
export async function retryWhileBusy<T>(once: (remainingMs: number) => Promise<T>, timeoutMs: number, clock: RetryClock = systemClock()): Promise<T> {
  const deadline = clock.now() + timeoutMs;
  const backoff = new Backoff({ ...BUSY_BACKOFF, timers: clock.timers, random: clock.random });
  for (;;) {
    try {
      return await once(Math.max(1000, deadline - clock.now()));
    } catch (err) {
      if (!(err instanceof EnrollError && err.code === CpErrorCode.Busy) || clock.now() >= deadline) throw err;
      await backoff.wait();
    }
  }
}

/**
 * One request/reply call through `retryWhileBusy`. Every call here is safe to repeat: enroll of an
 * identity that exists answers ECHALLENGE (proof of possession).
 */
async function request<T>(t: Target, subject: string, body: unknown, timeoutMs = 10_000): Promise<T> {
  return withConnection(t, (nc, url) => retryWhileBusy((remaining) => requestOnce<T>(nc, url, subject, body, remaining), timeoutMs));
}

async function requestOnce<T>(nc: NatsConnection, url: string, subject: string, body: unknown, timeoutMs: number): Promise<T> {
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
}

/**
 * Enroll: token + public key + name -> identity, address, peers, policy, JWT. When the identity exists
 * already (a retry after a crash), the control plane answers ECHALLENGE; with `privateKey` the
 * challenge is answered once (proof of possession) and the request repeated.
 */
export async function enroll(opts: EnrollOptions & Target): Promise<EnrollResponse> {
  const { token, name, publicKey, endpoint, natsPublicKey, advertiseRoutes, exitNode } = opts;
  const body = {
    token,
    name,
    publicKey,
    ...(endpoint ? { endpoint } : {}),
    ...(natsPublicKey ? { natsPublicKey } : {}),
    ...(advertiseRoutes?.length ? { advertiseRoutes } : {}),
    ...(exitNode ? { exitNode } : {}),
  };
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

/**
 * Replace the routes this agent advertises (`lattice up --advertise-routes`, `--exit-node`): new ones wait
 * for an operator's approval, kept ones keep their state, the rest are withdrawn (controlplane/routes.ts).
 */
export function updateRoutes(opts: { jwt: string; advertiseRoutes: string[]; exitNode: boolean; timeoutMs?: number } & Target): Promise<{ routes: { cidr: string; state: string }[] }> {
  return request(opts, SUBJECTS.routes, { jwt: opts.jwt, advertiseRoutes: opts.advertiseRoutes, exitNode: opts.exitNode }, opts.timeoutMs);
}

/** Current peers and policy for a stored identity (on restart, before the watcher catches up). */
export function fetchDirectory(opts: { jwt: string; timeoutMs?: number } & Target): Promise<{ self: Peer; peers: Peer[]; policy: unknown }> {
  return request(opts, SUBJECTS.directory, { jwt: opts.jwt }, opts.timeoutMs);
}
