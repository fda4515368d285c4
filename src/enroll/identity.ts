import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { statePaths } from '../state.js';
import { createUser, fromSeed } from '@nats-io/jwt';
import { CpErrorCode } from '../controlplane/types.js';
import { parseJoinToken } from '../controlplane/join.js';
import type { NatsConnection } from 'nats';
import { EnrollError, enroll, fetchDirectory, learnedUrls, splitUrls, type Target } from './client.js';
import { controlPlaneEndpoint, credentialsPath, loadCredentials, saveCredentials, type Credentials } from './credentials.js';
import { CaPinError, fetchPinnedCa } from './pin.js';

/**
 * What `sandbox start` needs: the stored identity of sandbox `name` if there is one (no token used),
 * else a new one enrolled with `token` and stored before it is returned.
 *
 * The key pair is written to a 0600 side file before the enrollment request, so a crash between the
 * control plane's answer and the credentials write is repaired by the next start: it re-enrolls with
 * the same key and token, which the control plane answers idempotently with the same identity.
 */
export interface ObtainIdentityOptions {
  stateDir: string;
  name: string;
  /**
   * The control plane's NATS URL(s), a list or comma-separated (a first enrollment needs them unless the
   * join token carries them; on reuse they are tried before the stored ones).
   */
  controlPlaneUrl?: string | string[];
  token?: string;
  /** host:port of the WireGuard socket, if known at enrollment. */
  endpoint?: string;
  /** X25519 key pair in wg(8) base64 (src/wg/keys.ts generatePrivateKey + publicKeyOf). */
  generateKeyPair: () => { privateKey: string; publicKey: string };
  /** Ask the control plane whether a stored identity is still valid (and refresh peers/policy). Default true. */
  verify?: boolean;
  timeoutMs?: number;
}

export interface ObtainedIdentity {
  credentials: Credentials;
  /** true when the stored identity was reused (no token consumed). */
  reused: boolean;
}

const pendingKeyPath = (stateDir: string, name: string) => join(statePaths(stateDir).credentials, `${name}.key-pending.json`);

/**
 * The sandbox's identity: its stored credentials when still valid (verified with the control plane unless
 * `verify` is false), else a new enrollment with the token. @throws CredentialsError, EnrollError, ControlPlaneUnreachableError.
 */
export async function obtainIdentity(o: ObtainIdentityOptions): Promise<ObtainedIdentity> {
  credentialsPath(o.stateDir, o.name); // validates the name
  const stored = await loadCredentials(o.stateDir, o.name);
  if (stored) {
    if (o.verify !== false) {
      const ep = controlPlaneEndpoint(stored, o.controlPlaneUrl);
      const target: Target = { controlPlaneUrl: ep.urls, user: ep.user, caPem: ep.caPem };
      // EREVOKED / EUNAUTHORIZED propagate: a revoked identity must not come up.
      const d = await fetchDirectory({ ...target, jwt: stored.jwt, timeoutMs: o.timeoutMs });
      const refreshed: Credentials = { ...stored, peers: d.peers, policy: d.policy };
      await saveCredentials(o.stateDir, refreshed);
      return { credentials: refreshed, reused: true };
    }
    return { credentials: stored, reused: true };
  }
  if (!o.token) throw new UsageError(`no stored identity for sandbox ${o.name}; pass --token to enroll it`);
  // A join token (lt1.…) carries the token's bootstrap NATS user, the control plane's URLs and its CA pin;
  // a plain token connects anonymously to --control-plane.
  const join = parseJoinToken(o.token);
  const urls = splitUrls([...(o.controlPlaneUrl === undefined ? [] : typeof o.controlPlaneUrl === 'string' ? [o.controlPlaneUrl] : o.controlPlaneUrl), ...(join.urls ?? [])]);
  if (urls.length === 0) throw new UsageError('pass --control-plane URL (the control plane\'s NATS URL) to enroll');
  // TLS: take the CA from the server only if it matches the token's pin (enroll/pin.ts), then verify against it.
  const caPem = join.ca ? await pinnedCa(urls, join.ca, o.timeoutMs) : undefined;
  const keyFile = pendingKeyPath(o.stateDir, o.name);
  let keys: { privateKey: string; publicKey: string; natsSeed?: string };
  try {
    keys = JSON.parse(await readFile(keyFile, 'utf8')) as typeof keys;
  } catch {
    // The launcher's own NATS user key is made here and never leaves this host: only its public key is sent.
    keys = { ...o.generateKeyPair(), natsSeed: new TextDecoder().decode(createUser().getSeed()) };
    await writeFileAtomic(keyFile, JSON.stringify(keys), 0o600);
  }
  const natsSeed = keys.natsSeed ?? new TextDecoder().decode(createUser().getSeed());
  const natsPublicKey = join.nats ? fromSeed(new TextEncoder().encode(natsSeed)).getPublicKey() : undefined;
  let r;
  try {
    r = await enroll({
      controlPlaneUrl: urls,
      user: join.nats,
      caPem,
      token: join.token,
      name: o.name,
      publicKey: keys.publicKey,
      endpoint: o.endpoint,
      natsPublicKey,
      privateKey: keys.privateKey,
      timeoutMs: o.timeoutMs,
    });
  } catch (err) {
    // A refused key (revoked, or taken by another agent) is useless: draw a new one next time.
    if (err instanceof EnrollError && (err.code === CpErrorCode.Revoked || err.code === CpErrorCode.KeyInUse)) await unlink(keyFile).catch(() => undefined);
    throw err;
  }
  const credentials: Credentials = {
    version: 1,
    name: o.name,
    namespace: r.namespace,
    agentId: r.agentId,
    privateKey: keys.privateKey,
    publicKey: keys.publicKey,
    address: r.address,
    subnets: r.subnets,
    ...(r.overlay ? { overlay: r.overlay } : {}),
    jwt: r.jwt,
    jwtExpiresAt: r.jwtExpiresAt,
    allowedTools: r.allowedTools,
    allowedNamespaces: r.allowedNamespaces,
    modes: r.modes,
    policy: r.policy,
    peers: r.peers,
    controlPlane: { url: urls[0]!, urls, ...(caPem ? { caPem } : {}), clusterId: r.controlPlane.clusterId, issuer: r.controlPlane.issuer },
    ...(r.nats ? { nats: { jwt: r.nats.jwt, seed: natsSeed, inboxPrefix: r.nats.inboxPrefix } } : {}),
    enrolledAt: Date.now(),
  };
  await saveCredentials(o.stateDir, credentials);
  await unlink(keyFile).catch(() => undefined);
  return { credentials, reused: false };
}

/**
 * The pinned CA from the first of `urls` that answers. A server that answers with another CA ends the
 * search at once (CaPinError): that is the one error a launcher must never walk past.
 */
async function pinnedCa(urls: string[], pin: string, timeoutMs?: number): Promise<string> {
  let last: unknown;
  for (const url of urls) {
    try {
      return await fetchPinnedCa(url, pin, timeoutMs);
    } catch (err) {
      if (err instanceof CaPinError) throw err;
      last = err;
    }
  }
  throw last;
}

/**
 * Keep every server a live connection knows (the ones it was given and the cluster's connect_urls from
 * INFO) in the stored credentials, so a restart whose first node is dead comes up through another.
 * Returns the credentials as stored (unchanged, and not rewritten, when nothing new was learned).
 */
export async function rememberServers(stateDir: string, c: Credentials, nc: NatsConnection, given: readonly string[]): Promise<Credentials> {
  const stored = c.controlPlane.urls ?? [c.controlPlane.url];
  const urls = learnedUrls(nc, [...given, ...stored]);
  if (urls.join(',') === stored.join(',')) return c;
  const next: Credentials = { ...c, controlPlane: { ...c.controlPlane, url: urls[0]!, urls } };
  await saveCredentials(stateDir, next);
  return next;
}
