import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createAccount, createOperator, createUser, encodeAccount, encodeOperator, encodeUser, fromPublic, fromSeed, type Permissions } from '@nats-io/jwt';
import { LatticeError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';

/**
 * NATS decentralized auth ("operator mode", nats-server 2.2+; JWT spec in nats-io/jwt) for the embedded
 * server:
 *
 *   operator (self-signed)  ── signs ──> account SYS     (system account: claim updates, no app traffic)
 *                           └─ signs ──> account LATTICE (JetStream, all control-plane subjects)
 *   account LATTICE         ── signs ──> user JWTs: control plane, per-token bootstrap, per-launcher
 *
 * Users are signed by the account key, so the server accepts a newly minted user without any reload.
 * Revocation: the account JWT carries `revocations: {userPublicKey: unixSeconds}`; it is re-signed and
 * pushed to the server on `$SYS.REQ.CLAIMS.UPDATE` (full resolver), which closes that user's
 * connections at once and refuses it afterwards. The list is kept in a 0600 file too, so a restarted
 * server preloads it.
 *
 * Files in <dir> (0600, written atomically): operator.seed, sys.seed, account.seed, revocations.json,
 * and nats-server.conf (0600: it holds only public JWTs, but nothing else needs to read it).
 * Seeds never reach a log.
 */

export const LAUNCHER_INBOX_PREFIX = '_INBOX_';

export class NatsAuthError extends LatticeError {
  override readonly name = 'NatsAuthError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ENATS_AUTH', message, options);
  }
}

/** A user credential: the JWT the server checks and the nkey seed that proves possession (never logged). */
export interface NatsUserCreds {
  jwt: string;
  seed: string;
  /** Request replies and consumer deliveries arrive under this prefix (the user may subscribe only there). */
  inboxPrefix: string;
}

/** What a launcher's user may do (see launcherPermissions). */
export interface LauncherScope {
  agentId: string;
  namespace: string;
  name: string;
  /** WireGuard public key, base64: its revocation key in the revocations bucket. */
  wgPublicKey: string;
  allowedNamespaces: string[];
}

const KV = (bucket: string) => `KV_${bucket}`;
/** Consumer create with the filter in the subject (JetStream API, server 2.9+): the permission pins the filter. */
const watchSubject = (bucket: string, key: string) => `$JS.API.CONSUMER.CREATE.${KV(bucket)}.*.$KV.${bucket}.${key}`;
const pubkeyToken = (wgPublicKey: string) => `k.${Buffer.from(wgPublicKey, 'base64').toString('base64url')}`;

/** Inbox prefix of a launcher: its agent id names it, so no one else may subscribe there. */
export const launcherInbox = (agentId: string) => `${LAUNCHER_INBOX_PREFIX}${agentId.replace(/[^A-Za-z0-9_-]/g, '')}`;
export const bootstrapInbox = (tokenId: string) => `${LAUNCHER_INBOX_PREFIX}B${tokenId.replace(/[^A-Za-z0-9_-]/g, '')}`;

/**
 * A launcher's permissions, enforced by nats-server. Pure. Allowed and nothing else:
 *   publish  lattice.cp.{endpoint,directory,delegate,egress-request,routes}   requests (each carries the agent JWT)
 *            lattice.audit.<ns>.<agentId>.>                            its own audit events only
 *            lattice.nat.<ns>.*                                        NAT signalling to peers of its namespace
 *            $JS.API.INFO, $JS.API.STREAM.INFO.KV_<agents|policies|revocations>
 *            consumer create on agents a.<ns>.* (own and allowed namespaces), policies <ns>, revocations k.<own key>
 *            $JS.FC.KV_<those>.>                                       flow-control replies of its watches
 *   subscribe <inbox>.> and lattice.nat.<ns>.<name>
 * No KV get or put (direct or API), no stream or consumer management, no other inbox, no lattice.cp.> subscription.
 */
export function launcherPermissions(s: LauncherScope, buckets: { agents: string; policies: string; revocations: string }): Permissions {
  const spaces = [...new Set([s.namespace, ...s.allowedNamespaces])];
  const watched = [buckets.agents, buckets.policies, buckets.revocations];
  return {
    pub: {
      allow: [
        'lattice.cp.endpoint',
        'lattice.cp.directory',
        'lattice.cp.delegate',
        'lattice.cp.egress-request',
        'lattice.cp.routes',
        `lattice.audit.${s.namespace}.${s.agentId}.>`,
        `lattice.nat.${s.namespace}.*`,
        '$JS.API.INFO',
        ...watched.map((b) => `$JS.API.STREAM.INFO.${KV(b)}`),
        ...spaces.map((ns) => watchSubject(buckets.agents, `a.${ns}.*`)),
        watchSubject(buckets.policies, s.namespace),
        watchSubject(buckets.revocations, pubkeyToken(s.wgPublicKey)),
        ...watched.map((b) => `$JS.FC.${KV(b)}.>`),
      ],
    },
    sub: { allow: [`${launcherInbox(s.agentId)}.>`, `lattice.nat.${s.namespace}.${s.name}`] },
  };
}

/** A bootstrap (per enrollment token) user: request enrollment, read its own replies; nothing else. */
export function bootstrapPermissions(tokenId: string, enrollSubject: string): Permissions {
  return { pub: { allow: [enrollSubject] }, sub: { allow: [`${bootstrapInbox(tokenId)}.>`] } };
}

const UNLIMITED = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
const JETSTREAM = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };

interface Keys {
  operator: string;
  sys: string;
  account: string;
}

export class NatsAuthority {
  private constructor(
    private readonly dir: string,
    private readonly keys: Keys,
    private revocations: Record<string, number>,
  ) {}

  /** Load the operator, system and account keys from `dir`, creating them (0600, atomically) on first start. */
  static async open(dir: string): Promise<NatsAuthority> {
    const keys = {
      operator: await loadOrCreateSeed(join(dir, 'operator.seed'), () => createOperator().getSeed()),
      sys: await loadOrCreateSeed(join(dir, 'sys.seed'), () => createAccount().getSeed()),
      account: await loadOrCreateSeed(join(dir, 'account.seed'), () => createAccount().getSeed()),
    };
    let revocations: Record<string, number> = {};
    try {
      revocations = JSON.parse(await readFile(join(dir, 'revocations.json'), 'utf8')) as Record<string, number>;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new NatsAuthError(`${join(dir, 'revocations.json')} is damaged; restore it or remove it (revoked launchers could then connect again)`, { cause: err });
    }
    return new NatsAuthority(dir, keys, revocations);
  }

  get accountPublicKey(): string {
    return this.kp('account').getPublicKey();
  }

  private kp(k: keyof Keys) {
    return fromSeed(new TextEncoder().encode(this.keys[k]));
  }

  /** The account JWT with the current revocation list. */
  accountJwt(): Promise<string> {
    const revocations = Object.keys(this.revocations).length > 0 ? { revocations: this.revocations } : {};
    return encodeAccount('LATTICE', this.kp('account'), { limits: { ...UNLIMITED, ...JETSTREAM }, ...revocations }, { signer: this.kp('operator') });
  }

  /**
   * Write nats-server.conf for operator mode with a full resolver (both accounts preloaded) and return its path.
   * `listen` is host:port; `tls` is optional {cert, key} file paths.
   */
  async writeServerConfig(o: { listen: string; storeDir: string; tls?: { cert: string; key: string } }): Promise<string> {
    const op = this.kp('operator');
    const sys = this.kp('sys');
    const opJwt = await encodeOperator('lattice', op, { system_account: sys.getPublicKey() });
    const sysJwt = await encodeAccount('SYS', sys, { limits: UNLIMITED }, { signer: op });
    const accJwt = await this.accountJwt();
    await writeFileAtomic(join(this.dir, 'operator.jwt'), opJwt, 0o600);
    const q = (s: string) => JSON.stringify(s);
    const conf = [
      `listen: ${q(o.listen)}`,
      `operator: ${q(join(this.dir, 'operator.jwt'))}`,
      `system_account: ${sys.getPublicKey()}`,
      `resolver: { type: full, dir: ${q(join(this.dir, 'resolver'))}, allow_delete: false, interval: "2m" }`,
      `resolver_preload: { ${sys.getPublicKey()}: ${q(sysJwt)}, ${this.accountPublicKey}: ${q(accJwt)} }`,
      `jetstream: { store_dir: ${q(o.storeDir)} }`,
      ...(o.tls ? [`tls: { cert_file: ${q(o.tls.cert)}, key_file: ${q(o.tls.key)}, timeout: 5 }`] : []),
      '',
    ].join('\n');
    const path = join(this.dir, 'nats-server.conf');
    await writeFileAtomic(path, conf, 0o600);
    return path;
  }

  private async user(name: string, signer: 'account' | 'sys', permissions: Permissions, inboxPrefix: string, opts: { exp?: number; publicKey?: string } = {}): Promise<{ jwt: string; seed?: string; publicKey: string }> {
    const ukp = opts.publicKey ? fromPublic(opts.publicKey) : createUser();
    const jwt = await encodeUser(name, ukp, this.kp(signer), permissions, opts.exp ? { exp: opts.exp } : {});
    return { jwt, seed: opts.publicKey ? undefined : new TextDecoder().decode(ukp.getSeed()), publicKey: ukp.getPublicKey() };
  }

  /** The control plane's own user: everything in the account. */
  async controlPlaneUser(): Promise<NatsUserCreds> {
    const u = await this.user('lattice-control-plane', 'account', {}, '_INBOX');
    return { jwt: u.jwt, seed: u.seed!, inboxPrefix: '_INBOX' };
  }

  /** A system-account user, only for pushing the account JWT (revocations) to the server. */
  async systemUser(): Promise<NatsUserCreds> {
    const inbox = '_INBOX';
    const u = await this.user('lattice-system', 'sys', { pub: { allow: ['$SYS.REQ.CLAIMS.UPDATE'] }, sub: { allow: [`${inbox}.>`] } }, inbox);
    return { jwt: u.jwt, seed: u.seed!, inboxPrefix: inbox };
  }

  /** The bootstrap user of one enrollment token; it expires with the token (`expiresAt`, epoch ms). */
  async bootstrapUser(tokenId: string, expiresAtMs: number, enrollSubject: string): Promise<NatsUserCreds> {
    const u = await this.user(`lattice-bootstrap-${tokenId}`, 'account', bootstrapPermissions(tokenId, enrollSubject), bootstrapInbox(tokenId), {
      exp: Math.ceil(expiresAtMs / 1000),
    });
    return { jwt: u.jwt, seed: u.seed!, inboxPrefix: bootstrapInbox(tokenId) };
  }

  /** A launcher's user for the nkey public key it generated (its seed never leaves the launcher). */
  async launcherUser(natsPublicKey: string, scope: LauncherScope, buckets: { agents: string; policies: string; revocations: string }, expiresAtMs?: number): Promise<{ jwt: string; inboxPrefix: string }> {
    if (!isUserPublicKey(natsPublicKey)) throw new NatsAuthError('natsPublicKey must be an nkey user public key (U...)');
    const u = await this.user(`lattice-launcher-${scope.namespace}-${scope.name}`, 'account', launcherPermissions(scope, buckets), launcherInbox(scope.agentId), {
      publicKey: natsPublicKey,
      ...(expiresAtMs ? { exp: Math.ceil(expiresAtMs / 1000) } : {}),
    });
    return { jwt: u.jwt, inboxPrefix: launcherInbox(scope.agentId) };
  }

  /**
   * Revoke user public keys: recorded (file, atomically) before the new account JWT is returned; the
   * caller pushes it to the server (pushAccount). Revokes every JWT of that key issued up to `nowSec`.
   */
  async revoke(userPublicKeys: string[], nowSec: number): Promise<string> {
    for (const k of userPublicKeys) if (isUserPublicKey(k)) this.revocations[k] = nowSec;
    await writeFileAtomic(join(this.dir, 'revocations.json'), JSON.stringify(this.revocations), 0o600);
    return this.accountJwt();
  }
}

export function isUserPublicKey(s: unknown): s is string {
  if (typeof s !== 'string' || !/^U[A-Z2-7]{55}$/.test(s)) return false;
  try {
    fromPublic(s);
    return true;
  } catch {
    return false;
  }
}

async function loadOrCreateSeed(path: string, make: () => Uint8Array): Promise<string> {
  try {
    const s = (await readFile(path, 'utf8')).trim();
    if (!/^S[A-Z2-7]{57}$/.test(s)) throw new NatsAuthError(`${path} does not hold an nkey seed; restore it from a backup (a new one would lock out every enrolled launcher)`);
    return s;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const seed = new TextDecoder().decode(make());
  await writeFileAtomic(path, `${seed}\n`, 0o600);
  return seed;
}
