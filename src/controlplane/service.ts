import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Backoff } from '../backoff.js';
import type { Clock } from '../clock.js';
import { IpamExhaustedError, Ipam, addressOf, namespaceSubnets, overlayPools, planIpam, DEFAULT_IPAM, type IpamConfig } from './ipam.js';
import { AgentCache, peerOf } from './agentcache.js';
import { JwtError, signAgentJwt, verifyAgentJwt, type AgentClaims } from './jwt.js';
import { KeyedMutex, KvConflictError, casUpdate, encodeJson, getJson, type KvBucket, type KvStore } from './kv.js';
import { ChildIndex } from './children.js';
import { buildAgentTree, clampJwtTtl, planDelegation, type AgentTreeNode } from './delegation.js';
import { encodeJoinToken } from './join.js';
import { checkChallenge, checkProof, makeChallenge, newX25519PrivateKey, x25519PublicKey, type PossessionSubject } from './possession.js';
import { isUserPublicKey, type LauncherScope } from '../natsserver/auth.js';
import { applyLabelEdit, labelKeyProblem, labelsProblems, type DirectorySnapshot, type LabelEdit } from '../policy/labels.js';
import { parseCidr } from '../net/addr.js';
import { Routes, mergeAdvertised, parseAdvertised } from './routes.js';
import { NamespaceExitDefaults, type NamespaceExitDefault } from './namespaces.js';
import { buildTokenRecord, checkUsable, consumeToken, generateTokenSecret, hashToken, isWellFormedToken, refundToken } from './tokens.js';
import {
  AgentStatus,
  BUCKETS,
  DEFAULT_MODES,
  CpErrorCode,
  ControlPlaneError,
  SUBJECTS,
  badRequest,
  isEndpoint,
  isLabel,
  isWgKey,
  type AgentRecord,
  type ControlPlaneEvent,
  type ControlPlaneInfo,
  type EnrollResponse,
  type NamespacePolicyRecord,
  type Peer,
  type PolicyRef,
  type RevocationRecord,
  type TokenRecord,
} from './types.js';

/**
 * The control plane's service logic: tokens, enrollment, directory, revocation, policies. All state
 * is in KV buckets and every read-modify-write is a compare-and-set, so several instances can serve
 * the same buckets. The only in-process state is a cache of agents fed by a KV watch (for peer lists).
 *
 * KV layout
 *   tokens       <sha256(secret)>     TokenRecord
 *   agents       a.<ns>.<name>        AgentRecord            (watched by launchers)
 *                k.<b64url(pubkey)>   {namespace, name}      a public key belongs to one agent
 *   ipam         see ipam.ts
 *   policies     <ns>                 NamespacePolicyRecord  (watched by launchers)
 *   revocations  a.<ns>.<name>        RevocationRecord       (watched by launchers)
 *                k.<b64url(pubkey)>   RevocationRecord       a revoked key never enrolls again
 *   config       cluster              {clusterId, jwtSecret} created once, shared by all instances
 */

export interface ServiceOptions {
  store: KvStore;
  clock: Clock;
  ipam?: IpamConfig;
  /** Lifetime of agent JWTs (default 365 days). */
  jwtTtlMs?: number;
  /** Throws (a ControlPlaneError or anything with a message) when a policy document is invalid. */
  validatePolicy?: (policy: unknown) => void;
  /** Resolve a preset name to a policy document; unknown presets are handed out as {preset: name}. */
  resolvePreset?: (name: string) => unknown;
  /** A pending enrollment older than this is considered abandoned and may be taken over. */
  pendingStaleMs?: number;
  /** Delegation quotas: enrollments one agent may hand out in total (default 16), delegated agents per namespace (default 64). */
  delegationQuota?: { perParent?: number; perNamespace?: number };
  /** Called after each enrollment and revocation (for the audit trail); must not throw. */
  onEvent?: (e: ControlPlaneEvent) => void;
  /**
   * NATS users (operator mode, see natsserver/auth.ts). With it every token carries a bootstrap user
   * (a join token), every enrollment must send the launcher's nkey public key and gets a user JWT
   * scoped to that agent, and a revocation revokes that user on the server. Without it (an external
   * NATS without auth) none of this happens.
   */
  natsUsers?: NatsUserIssuer;
}

/** Mints and revokes NATS users; implemented over NatsAuthority + the server's system account. */
export interface NatsUserIssuer {
  bootstrap(tokenId: string, expiresAtMs: number): Promise<{ jwt: string; seed: string; inboxPrefix: string }>;
  launcher(natsPublicKey: string, scope: LauncherScope, expiresAtMs: number): Promise<{ jwt: string; inboxPrefix: string }>;
  /** Revoke the users; resolves once the server has the new revocation list (their connections are closed). */
  revoke(natsPublicKeys: string[]): Promise<void>;
  /** sha256:<hex> of the CA certificate that launchers pin, when NATS is served over TLS. */
  readonly caHash?: string;
  /** The NATS URLs launchers on other hosts use (written into join tokens). */
  readonly urls?: string[];
}

interface ClusterConfig {
  clusterId: string;
  /** base64url; the HS256 key shared by every control-plane instance of this cluster. */
  jwtSecret: string;
  createdAt: number;
  /** base64url X25519 private key for re-enrollment challenges (possession.ts); added to older clusters on start. */
  possessionKey?: string;
}

export const agentKey = (namespace: string, name: string) => `a.${namespace}.${name}`;
export const pubkeyKey = (publicKey: string) => `k.${Buffer.from(publicKey, 'base64').toString('base64url')}`;
export const DEFAULT_JWT_TTL_MS = 365 * 86_400_000;
export const DEFAULT_DELEGATIONS_PER_PARENT = 16;
export const DEFAULT_DELEGATED_PER_NAMESPACE = 64;
/** Who an operator's change is recorded as when it is made inside the control plane's own process (no HTTP user). */
export const LOCAL_CALLER = 'local';

export interface AgentView {
  agentId: string;
  name: string;
  namespace: string;
  publicKey: string;
  status: string;
  ipv4?: string;
  ipv6?: string;
  endpoint?: string;
  allowedTools: string[];
  allowedNamespaces: string[];
  modes: AgentRecord['modes'];
  labels: Record<string, string>;
  createdAt: string;
  jwtExpiresAt?: string;
  /** Delegation: the agent that created this one's token. */
  parentAgentId?: string;
}

export { peerOf };

/**
 * The directory as policy "peers" rules see it: each peer's name, namespace, labels and its own
 * addresses (the host prefixes of its allowed IPs; a route it carries is not the peer).
 */
export function directorySnapshot(namespace: string, peers: readonly Peer[]): DirectorySnapshot {
  return {
    namespace,
    peers: peers.map((p) => ({
      name: p.name,
      namespace: p.namespace,
      ...(p.labels ? { labels: p.labels } : {}),
      addresses: p.allowedIPs.flatMap((c) => {
        const r = parseCidr(c);
        return r.ok && r.cidr.bits === (r.cidr.addr.family === 4 ? 32 : 128) ? [r.cidr.addr] : [];
      }),
    })),
  };
}

/**
 * The control plane's state machine over JetStream KV: tokens (TTL, use limit), enrollment (IPAM,
 * possession proof on re-enrollment, JWT and NATS user), the directory, policies, labels, delegation and
 * revocation. Transport-free: the NATS and HTTP APIs call it; errors are `ControlPlaneError` with a code.
 */
export class ControlPlaneService {
  private agentCache!: AgentCache;
  private readonly tokenMutex = new KeyedMutex();
  readonly stats = { enrollments: 0, enrollFailures: 0, revocations: 0, tokensCreated: 0 };
  /** Advertised routes and their approval (routes.ts). */
  readonly routes: Routes;
  /** Namespaces' default exit nodes (namespaces.ts). */
  readonly exitDefaults: NamespaceExitDefaults;

  private constructor(
    private readonly opts: ServiceOptions,
    private readonly b: Record<keyof typeof BUCKETS, KvBucket>,
    private readonly ipam: Ipam,
    private readonly cluster: Required<ClusterConfig>,
    private readonly secret: Uint8Array,
  ) {
    this.routes = new Routes({ agents: b.agents, clock: opts.clock, audit: (e) => this.emitEvent(e) });
    this.exitDefaults = new NamespaceExitDefaults({ config: b.config, clock: opts.clock, audit: (e) => this.emitEvent(e) });
  }

  static async open(opts: ServiceOptions): Promise<ControlPlaneService> {
    const entries = await Promise.all(
      (Object.keys(BUCKETS) as (keyof typeof BUCKETS)[]).map(async (k) => [k, await opts.store.bucket(BUCKETS[k])] as const),
    );
    const b = Object.fromEntries(entries) as Record<keyof typeof BUCKETS, KvBucket>;
    const cluster = await ensureCluster(b.config, opts.clock.now());
    await new ChildIndex(b.agents).backfill();
    const plan = planIpam(opts.ipam ?? DEFAULT_IPAM);
    const ipam = new Ipam(b.ipam, plan);
    const svc = new ControlPlaneService(opts, b, ipam, cluster as Required<ClusterConfig>, Buffer.from(cluster.jwtSecret, 'base64url'));
    await Promise.all([svc.startCache(), ipam.startCache()]);
    return svc;
  }

  /** Delegated children by parent (stateless view over the agents bucket). */
  private get children(): ChildIndex {
    return new ChildIndex(this.b.agents);
  }

  get info(): ControlPlaneInfo {
    return { clusterId: this.cluster.clusterId, issuer: this.issuer, subjects: SUBJECTS, buckets: BUCKETS };
  }

  get issuer(): string {
    return `lattice:${this.cluster.clusterId}`;
  }

  /** The HS256 key, for verifiers in the same process (tests, the audit consumer). */
  get jwtSecret(): Uint8Array {
    return this.secret;
  }

  close(): void {
    this.agentCache?.stop();
    this.ipam.stopCache();
  }

  private async startCache(): Promise<void> {
    this.agentCache = await AgentCache.start(this.b.agents, ['a.*.*']);
  }

  // ---- tokens ----

  /**
   * An operator creates an enrollment token (tokens.ts buildTokenRecord); audited as `token.created`
   * (id, limit, expiry; never the secret) in `by`'s name: the verified admin user, default "local"
   * (a call in this process). Errors: EBADREQ.
   */
  async createToken(body: unknown, by = LOCAL_CALLER): Promise<{ token: string; record: TokenRecord }> {
    const record = buildTokenRecord(body, this.opts.clock.now(), randomUUID(), (p) => this.checkPolicy(p));
    const token = await this.issueToken(record);
    this.emitEvent({ type: 'token.created', namespace: record.namespace, tokenId: record.id, limit: record.limit, expiresAt: record.expiresAt, by });
    return { token, record };
  }

  /** Store a token record under a fresh secret; returns what the launcher is given (a join token with NATS auth). */
  private async issueToken(record: TokenRecord): Promise<string> {
    const token = generateTokenSecret();
    await this.b.tokens.create(hashToken(token), encodeJson(record));
    this.stats.tokensCreated++;
    const nu = this.opts.natsUsers;
    if (!nu) return token;
    return encodeJoinToken({ token, nats: await nu.bootstrap(record.id, record.expiresAt), ...(nu.caHash ? { ca: nu.caHash } : {}), ...(nu.urls?.length ? { urls: nu.urls } : {}) });
  }

  // ---- enrollment ----

  async enroll(req: unknown): Promise<EnrollResponse> {
    try {
      const res = await this.enrollInner(req);
      this.stats.enrollments++;
      return res;
    } catch (err) {
      this.stats.enrollFailures++;
      if (err instanceof IpamExhaustedError) throw new ControlPlaneError(CpErrorCode.IpamExhausted, err.message, { cause: err });
      throw err;
    }
  }

  private async enrollInner(req: unknown): Promise<EnrollResponse> {
    const { token, publicKey, name, endpoint, natsPublicKey, challenge, proof, advertiseRoutes, exitNode } = parseEnrollRequest(req);
    // Routes are validated before anything is claimed; undefined: the request says nothing about routes.
    const advertised = advertiseRoutes !== undefined || exitNode !== undefined ? parseAdvertised(advertiseRoutes, exitNode, this.overlayPools()) : undefined;
    if (this.opts.natsUsers && !natsPublicKey) throw badRequest('natsPublicKey is required by this control plane (NATS auth is on); upgrade the launcher');
    const hash = hashToken(token);
    const tok = await getJson<TokenRecord>(this.b.tokens, hash);
    if (!tok) throw new ControlPlaneError(CpErrorCode.TokenUnknown, 'unknown enrollment token');
    const now = this.opts.clock.now();
    if (now >= tok.value.expiresAt) throw new ControlPlaneError(CpErrorCode.TokenExpired, 'enrollment token has expired; ask for a new one');
    if (await this.b.revocations.get(pubkeyKey(publicKey))) {
      throw new ControlPlaneError(CpErrorCode.Revoked, 'this public key belongs to a revoked agent; generate a new key');
    }
    const namespace = tok.value.namespace;
    const key = agentKey(namespace, name);

    // 1. Claim the name (a pending record), or find our own earlier enrollment.
    let claimed: { value: AgentRecord; revision: number } | undefined;
    const pendingWait = new Backoff({ initialMs: 25, maxMs: 100 });
    for (let attempt = 0; !claimed; attempt++) {
      const cur = await getJson<AgentRecord>(this.b.agents, key);
      if (cur) {
        if (cur.value.publicKey !== publicKey) {
          throw new ControlPlaneError(CpErrorCode.NameTaken, `agent ${name} already enrolled in namespace ${namespace} with another key; revoke it first`);
        }
        if (cur.value.status === AgentStatus.Active) {
          // Idempotent restart: only with the token that enrolled it. (Possession of the private key is
          // not proven here; a launcher with stored credentials does not come back this way at all.)
          if (cur.value.tokenId !== tok.value.id) {
            throw new ControlPlaneError(CpErrorCode.NameTaken, `agent ${name} is already enrolled in namespace ${namespace} with another token; reuse its stored credentials or revoke it first`);
          }
          // The public key is no secret (every peer sees it): the launcher must prove it holds the private key.
          this.checkPossession({ namespace, name, publicKey }, challenge, proof, now);
          this.emitEvent({ type: 'enrollment.reenrolled', agentId: cur.value.agentId, namespace, name, tokenId: tok.value.id, ...(endpoint ? { endpoint } : {}) });
          if (advertised) await this.routes.advertise(namespace, name, publicKey, advertised);
          return this.respond(await this.refreshEndpoint(key, cur, endpoint), undefined, natsPublicKey);
        }
        // Pending with our key: a concurrent identical request is in flight (wait for it) or one was abandoned (take over).
        if (now - cur.value.updatedAt < (this.opts.pendingStaleMs ?? 30_000) && attempt < 100) {
          await pendingWait.wait();
          continue;
        }
        const t = tok.value;
        const took: AgentRecord = {
          ...cur.value,
          allowedTools: t.allowedTools,
          allowedNamespaces: t.allowedNamespaces,
          modes: t.modes,
          policy: t.policy,
          ...(t.labels ? { labels: t.labels } : {}),
          ...(advertised ? { routes: mergeAdvertised(cur.value.routes, advertised, now) } : {}),
          tokenId: t.id,
          updatedAt: now,
          ...delegatedFrom(t),
        };
        try {
          claimed = { value: took, revision: await this.b.agents.update(key, encodeJson(took), cur.revision) };
        } catch (err) {
          if (!(err instanceof KvConflictError)) throw err;
        }
        continue;
      }
      checkUsable(tok.value, now); // fail fast; the authoritative check is the compare-and-set below
      // Delegated children may not drain a namespace's address pool: admins' tokens keep working.
      const perNamespace = this.opts.delegationQuota?.perNamespace ?? DEFAULT_DELEGATED_PER_NAMESPACE;
      if (tok.value.parent && this.delegatedIn(namespace) >= perNamespace) {
        throw new ControlPlaneError(CpErrorCode.Forbidden, `namespace ${namespace} already holds ${perNamespace} delegated agents (the quota); revoke some or enroll with an admin token`);
      }
      const rec: AgentRecord = {
        agentId: randomUUID(),
        name,
        namespace,
        publicKey,
        status: AgentStatus.Pending,
        ...(endpoint ? { endpoint } : {}),
        allowedTools: tok.value.allowedTools,
        allowedNamespaces: tok.value.allowedNamespaces,
        modes: tok.value.modes,
        ...(tok.value.policy ? { policy: tok.value.policy } : {}),
        ...(tok.value.labels ? { labels: tok.value.labels } : {}),
        ...(advertised?.length ? { routes: mergeAdvertised(undefined, advertised, now) } : {}),
        tokenId: tok.value.id,
        createdAt: now,
        updatedAt: now,
        ...delegatedFrom(tok.value),
      };
      try {
        claimed = { value: rec, revision: await this.b.agents.create(key, encodeJson(rec)) };
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err;
      }
    }

    let pending = claimed;
    const undo: (() => Promise<unknown>)[] = [];
    const rollback = async () => {
      for (const u of undo.reverse()) await u().catch(() => undefined);
    };
    undo.push(() => this.b.agents.delete(key, pending.revision));
    try {
      // Indexed under its parent before the check below (children.ts: why this order).
      const parent = pending.value.parent;
      if (parent) {
        await this.children.add(parent.agentId, namespace, name);
        undo.push(() => this.children.remove(parent.agentId, namespace, name));
      }
      // Delegation: checked after the name is claimed, so a parent revoked from here on finds this
      // pending child in its cascade, and a parent revoked before is seen here.
      if (pending.value.parent && (await this.b.revocations.get(pubkeyKey(pending.value.parent.publicKey)))) {
        throw new ControlPlaneError(CpErrorCode.Revoked, 'the agent that delegated this token has been revoked');
      }
      // 2. Claim the public key: one key, one agent.
      const pkKey = pubkeyKey(publicKey);
      for (let owned = false; !owned; ) {
        try {
          const rev = await this.b.agents.create(pkKey, encodeJson({ namespace, name }));
          undo.push(() => this.b.agents.delete(pkKey, rev));
          owned = true;
        } catch (err) {
          if (!(err instanceof KvConflictError)) throw err;
          const owner = await getJson<{ namespace: string; name: string }>(this.b.agents, pkKey);
          if (owner && (owner.value.namespace !== namespace || owner.value.name !== name)) {
            throw new ControlPlaneError(CpErrorCode.KeyInUse, 'this public key is already enrolled as another agent; generate a new key');
          }
          owned = !!owner; // ours from an earlier, abandoned attempt; if it vanished meanwhile, claim again
        }
      }

      // 3. An address (kept in the pending record so a takeover reuses it).
      if (!pending.value.address) {
        const addr = await this.ipam.allocate(namespace, key, publicKey);
        undo.push(() => this.ipam.free(namespace, addr.offset, key));
        const withAddr: AgentRecord = { ...pending.value, address: { ipv4: addr.ipv4, ipv6: addr.ipv6, offset: addr.offset } };
        pending = { value: withAddr, revision: await this.b.agents.update(key, encodeJson(withAddr), pending.revision) };
      }

      // 4. Use the token, last: everything before it can be undone without touching the count.
      await this.tokenMutex.run(hash, () =>
        casUpdate<TokenRecord>(this.b.tokens, hash, (t) => {
          if (!t) throw new ControlPlaneError(CpErrorCode.TokenUnknown, 'unknown enrollment token');
          return consumeToken(t, this.opts.clock.now());
        }),
      );
      undo.push(() => this.tokenMutex.run(hash, () => casUpdate<TokenRecord>(this.b.tokens, hash, (t) => (t ? refundToken(t) : undefined))));

      // 5. Identity: JWT, then the record goes active (compare-and-set: a revoke in between wins).
      const jti = randomUUID();
      const { jwt, expiresAt } = await this.sign(pending.value, jti);
      const nats = natsPublicKey ? await this.mintNatsUser(pending.value, natsPublicKey, expiresAt) : undefined;
      const active: AgentRecord = {
        ...pending.value,
        status: AgentStatus.Active,
        jti,
        jwtExpiresAt: expiresAt,
        updatedAt: this.opts.clock.now(),
        ...(natsPublicKey ? { natsUser: natsPublicKey } : {}),
      };
      const rev = await this.b.agents.update(key, encodeJson(active), pending.revision);
      this.emitEvent({
        type: 'enrollment.enrolled',
        agentId: active.agentId,
        namespace,
        name,
        ipv4: active.address!.ipv4,
        ipv6: active.address!.ipv6,
        tokenId: active.tokenId,
        expiresAt: expiresAt,
        ...(active.parent ? { parentAgentId: active.parent.agentId } : {}),
      });
      this.routes.auditAdvertised(namespace, active.agentId, name, [], active.routes ?? []);
      return this.respond({ value: active, revision: rev }, jwt, undefined, nats);
    } catch (err) {
      await rollback();
      if (err instanceof KvConflictError) {
        throw new ControlPlaneError(CpErrorCode.Internal, `enrollment of ${name} raced with a change to it (revoked?); retry`, { cause: err });
      }
      throw err;
    }
  }

  /** Throws ECHALLENGE (with a fresh challenge) unless `proof` answers a live `challenge` of ours for `s`. */
  private checkPossession(s: PossessionSubject, challenge: string | undefined, proof: string | undefined, now: number): void {
    const priv = Buffer.from(this.cluster.possessionKey, 'base64url');
    if (challenge !== undefined && checkChallenge(this.secret, s, challenge, now) && checkProof(priv, challenge, proof, s)) return;
    const fresh = { nonce: makeChallenge(this.secret, s, now), key: x25519PublicKey(priv).toString('base64'), namespace: s.namespace };
    const msg = challenge === undefined
      ? `agent ${s.name} already exists in namespace ${s.namespace}: prove possession of its private key by answering the challenge`
      : `the answer to the re-enrollment challenge for agent ${s.name} is wrong or late; only the holder of its private key can re-enroll it`;
    throw new ControlPlaneError(CpErrorCode.Challenge, msg, { challenge: fresh });
  }

  private async refreshEndpoint(key: string, cur: { value: AgentRecord; revision: number }, endpoint?: string) {
    if (!endpoint || endpoint === cur.value.endpoint) return cur;
    const r = await casUpdate<AgentRecord>(this.b.agents, key, (a) => {
      if (!a || a.publicKey !== cur.value.publicKey) throw new ControlPlaneError(CpErrorCode.Revoked, 'agent was revoked');
      return { ...a, endpoint, updatedAt: this.opts.clock.now() };
    });
    return { value: r.value as AgentRecord, revision: r.revision };
  }

  private async sign(a: AgentRecord, jti: string) {
    const now = this.opts.clock.now();
    // A delegated agent never outlives its parent's JWT.
    const ttlMs = clampJwtTtl(this.opts.jwtTtlMs ?? DEFAULT_JWT_TTL_MS, now, a.notAfter);
    if (ttlMs < 1000) throw new ControlPlaneError(CpErrorCode.TokenExpired, 'the delegating agent\'s lifetime is over; ask it for a new delegation');
    return signAgentJwt(
      this.secret,
      { agentId: a.agentId, namespace: a.namespace, name: a.name, tools: a.allowedTools, allowedNamespaces: a.allowedNamespaces, publicKey: a.publicKey, jti },
      { issuer: this.issuer, now, ttlMs },
    );
  }

  /** A NATS user for this agent's launcher, scoped to the agent (natsserver/auth.ts launcherPermissions). */
  private mintNatsUser(a: AgentRecord, natsPublicKey: string, expiresAtMs: number) {
    const scope: LauncherScope = { agentId: a.agentId, namespace: a.namespace, name: a.name, wgPublicKey: a.publicKey, allowedNamespaces: a.allowedNamespaces };
    return this.opts.natsUsers!.launcher(natsPublicKey, scope, expiresAtMs);
  }

  private async respond(
    entry: { value: AgentRecord; revision: number },
    jwt?: string,
    natsPublicKey?: string,
    nats?: { jwt: string; inboxPrefix: string },
  ): Promise<EnrollResponse> {
    let a = entry.value;
    if (!jwt) {
      // Re-enrollment of the same identity: a fresh JWT under a new jti (and a NATS user for the key the
      // launcher sent, the previous one revoked), recorded with compare-and-set.
      const jti = randomUUID();
      const signed = await this.sign(a, jti);
      if (natsPublicKey) nats = await this.mintNatsUser(a, natsPublicKey, signed.expiresAt);
      const r = await casUpdate<AgentRecord>(this.b.agents, agentKey(a.namespace, a.name), (cur) => {
        if (!cur || cur.publicKey !== a.publicKey) throw new ControlPlaneError(CpErrorCode.Revoked, 'agent was revoked');
        return { ...cur, jti, jwtExpiresAt: signed.expiresAt, updatedAt: this.opts.clock.now(), ...(natsPublicKey ? { natsUser: natsPublicKey } : {}) };
      });
      const previous = a.natsUser;
      a = r.value as AgentRecord;
      jwt = signed.jwt;
      if (previous && natsPublicKey && previous !== natsPublicKey) await this.opts.natsUsers?.revoke([previous]);
    }
    const address = a.address!;
    const index = await this.ipam.namespaceIndex(a.namespace);
    return {
      agentId: a.agentId,
      name: a.name,
      namespace: a.namespace,
      address: { ipv4: address.ipv4, ipv6: address.ipv6 },
      allowedIPs: [`${address.ipv4}/32`, `${address.ipv6}/128`],
      subnets: namespaceSubnets(this.ipam.plan, index),
      overlay: overlayPools(this.ipam.plan),
      peers: this.peersFor(a),
      policy: await this.effectivePolicy(a.namespace, a.policy),
      jwt,
      jwtExpiresAt: a.jwtExpiresAt!,
      allowedTools: a.allowedTools,
      allowedNamespaces: a.allowedNamespaces,
      modes: a.modes,
      controlPlane: this.info,
      ...(nats ? { nats } : {}),
    };
  }

  /** Active agents of the agent's own and allowed namespaces, except itself (from the watch-fed cache). */
  peersFor(a: Pick<AgentRecord, 'namespace' | 'name' | 'allowedNamespaces'>): Peer[] {
    return this.agentCache.peers(a, new Set([a.namespace, ...a.allowedNamespaces]));
  }

  private async effectivePolicy(namespace: string, ref?: PolicyRef): Promise<unknown> {
    const ns = await getJson<NamespacePolicyRecord>(this.b.policies, namespace);
    if (ns) return ns.value.policy;
    return resolvePolicyRef(ref, this.opts.resolvePreset);
  }

  // ---- agent-side requests (authenticated by the agent JWT) ----

  /** Verify an agent JWT: signature (HS256 only), issuer, expiry, and that the agent is not revoked. */
  async verifyJwt(jwt: string): Promise<AgentClaims> {
    const claims = await verifyAgentJwt(this.secret, jwt, { issuer: this.issuer, now: this.opts.clock.now() });
    if (!isWgKey(claims.wgpk) || (await this.b.revocations.get(pubkeyKey(claims.wgpk)))) {
      throw new ControlPlaneError(CpErrorCode.Revoked, 'agent has been revoked');
    }
    return claims;
  }

  private async authAgent(req: unknown): Promise<{ claims: AgentClaims; body: Record<string, unknown> }> {
    if (typeof req !== 'object' || req === null) throw badRequest('request must be a JSON object');
    const body = req as Record<string, unknown>;
    if (typeof body.jwt !== 'string') throw badRequest('jwt is required');
    try {
      return { claims: await this.verifyJwt(body.jwt), body };
    } catch (err) {
      if (err instanceof JwtError) throw new ControlPlaneError(CpErrorCode.Unauthorized, err.message, { cause: err });
      throw err;
    }
  }

  /** The launcher publishes where its WireGuard socket can be reached. */
  async updateEndpoint(req: unknown): Promise<{ endpoint: string }> {
    const { claims, body } = await this.authAgent(req);
    if (!isEndpoint(body.endpoint)) throw badRequest('endpoint must be host:port or [v6]:port');
    const endpoint = body.endpoint;
    await casUpdate<AgentRecord>(this.b.agents, agentKey(claims.ns, claims.name), (a) => {
      if (!a || a.publicKey !== claims.wgpk) throw new ControlPlaneError(CpErrorCode.Revoked, 'agent has been revoked');
      return a.endpoint === endpoint ? undefined : { ...a, endpoint, updatedAt: this.opts.clock.now() };
    });
    return { endpoint };
  }

  /**
   * The agent replaces the routes it advertises: {jwt, advertiseRoutes?: string[], exitNode?: boolean}.
   * New routes wait for approval, kept ones keep their state, the rest are withdrawn. Errors: EBADREQ, EREVOKED.
   */
  async updateRoutes(req: unknown): Promise<{ routes: { cidr: string; state: string }[] }> {
    const { claims, body } = await this.authAgent(req);
    const cidrs = parseAdvertised(body.advertiseRoutes, body.exitNode, this.overlayPools());
    const routes = await this.routes.advertise(claims.ns, claims.name, claims.wgpk, cidrs);
    return { routes: routes.map((r) => ({ cidr: r.cidr, state: r.state })) };
  }

  private overlayPools(): string[] {
    const o = overlayPools(this.ipam.plan);
    return [o.v4, o.v6];
  }

  /** Snapshot of what a launcher needs on restart: own record, peers, policy. */
  async directory(req: unknown): Promise<{ self: Peer; peers: Peer[]; policy: unknown; exitNode?: NamespaceExitDefault }> {
    const { claims } = await this.authAgent(req);
    const a = await getJson<AgentRecord>(this.b.agents, agentKey(claims.ns, claims.name));
    if (!a || a.value.publicKey !== claims.wgpk) throw new ControlPlaneError(CpErrorCode.Revoked, 'agent has been revoked');
    const exitNode = await this.exitDefaults.get(a.value.namespace);
    return { self: peerOf(a.value), peers: this.peersFor(a.value), policy: await this.effectivePolicy(a.value.namespace, a.value.policy), ...(exitNode && { exitNode }) };
  }

  // ---- admin ----

  async listAgents(namespace?: string): Promise<AgentView[]> {
    if (namespace !== undefined && !isLabel(namespace)) throw badRequest('bad namespace');
    const keys = await this.b.agents.keys(namespace ? `a.${namespace}.*` : 'a.*.*');
    const recs = await Promise.all(keys.map((k) => getJson<AgentRecord>(this.b.agents, k)));
    return recs
      .filter((r): r is { value: AgentRecord; revision: number } => !!r)
      .map(({ value: a }) => ({
        agentId: a.agentId,
        name: a.name,
        namespace: a.namespace,
        publicKey: a.publicKey,
        status: a.status,
        ipv4: a.address?.ipv4,
        ipv6: a.address?.ipv6,
        endpoint: a.endpoint,
        allowedTools: a.allowedTools,
        allowedNamespaces: a.allowedNamespaces,
        modes: a.modes,
        labels: a.labels ?? {},
        createdAt: new Date(a.createdAt).toISOString(),
        jwtExpiresAt: a.jwtExpiresAt ? new Date(a.jwtExpiresAt).toISOString() : undefined,
        ...(a.parent ? { parentAgentId: a.parent.agentId } : {}),
      }))
      .sort((x, y) => (x.namespace + '.' + x.name).localeCompare(y.namespace + '.' + y.name));
  }

  /** Revoke: the key is barred for good, the name and the address become free; its delegated children go too. */
  async revokeAgent(namespace: string, name: string): Promise<RevocationRecord> {
    return (await this.revokeAgentTree(namespace, name)).revoked;
  }

  // ---- delegation (see delegation.ts) ----

  /** An agent (by its JWT) creates a child enrollment token holding a subset of what it holds. */
  async delegate(jwt: unknown, body: unknown): Promise<{ token: string; record: TokenRecord }> {
    const { claims } = await this.authAgent({ jwt });
    const cur = await getJson<AgentRecord>(this.b.agents, agentKey(claims.ns, claims.name));
    if (!cur || cur.value.publicKey !== claims.wgpk || cur.value.status !== AgentStatus.Active) {
      throw new ControlPlaneError(CpErrorCode.Revoked, 'agent has been revoked');
    }
    // Whatever channel asks (HTTP, NATS, the agent API in audit mode), delegating is the `delegate` tool.
    if (!cur.value.allowedTools.includes('delegate')) {
      throw new ControlPlaneError(CpErrorCode.Forbidden, `agent ${claims.name} may not delegate: its tools do not include "delegate"; enroll it with a token that grants it`);
    }
    const record = planDelegation({ ...cur.value, jwtExpiresAt: claims.exp * 1000 }, body, this.opts.clock.now(), randomUUID());
    // Quota per parent: the enrollments it has handed out, counted on its record (compare-and-set).
    const perParent = this.opts.delegationQuota?.perParent ?? DEFAULT_DELEGATIONS_PER_PARENT;
    await casUpdate<AgentRecord>(this.b.agents, agentKey(claims.ns, claims.name), (a) => {
      if (!a || a.publicKey !== claims.wgpk) throw new ControlPlaneError(CpErrorCode.Revoked, 'agent has been revoked');
      const used = a.delegated ?? 0;
      if (used + record.limit > perParent) {
        throw new ControlPlaneError(CpErrorCode.Forbidden, `agent ${claims.name} has used ${used} of its ${perParent} delegated enrollments; ask an admin for more or revoke unused children`);
      }
      return { ...a, delegated: used + record.limit, updatedAt: this.opts.clock.now() };
    });
    const token = await this.issueToken(record);
    this.emitEvent({ type: 'token.created', namespace: record.namespace, tokenId: record.id, limit: record.limit, expiresAt: record.expiresAt, by: `agent:${claims.name}`, agentId: cur.value.agentId });
    return { token, record };
  }

  /** Delegated agents of a namespace (from the watch-fed cache), for the per-namespace quota. */
  private delegatedIn(namespace: string): number {
    let n = 0;
    for (const a of this.agentCache.values()) if (a.namespace === namespace && a.parent) n++;
    return n;
  }

  /** The agent and, recursively, the agents it delegated to. */
  async agentTree(namespace: string, name: string): Promise<AgentTreeNode<AgentView>> {
    if (!isLabel(namespace) || !isLabel(name)) throw badRequest('namespace and name must be DNS labels');
    const all = await this.listAgents();
    const root = all.find((a) => a.namespace === namespace && a.name === name);
    if (!root) throw new ControlPlaneError(CpErrorCode.NotFound, `no agent ${name} in namespace ${namespace}`);
    return buildAgentTree(all, root.agentId)!;
  }

  /** Revoke an agent and then every agent it delegated to, breadth first (children from the index, children.ts). */
  async revokeAgentTree(namespace: string, name: string, reason = 'revoked by admin'): Promise<{ revoked: RevocationRecord; children: RevocationRecord[] }> {
    const revoked = await this.revokeOne(namespace, name, reason);
    const children: RevocationRecord[] = [];
    const queue = [revoked.agentId];
    const seen = new Set(queue);
    while (queue.length) {
      const parentId = queue.shift()!;
      for (const c of await this.children.children(parentId)) {
        const a = await getJson<AgentRecord>(this.b.agents, agentKey(c.namespace, c.name));
        if (!a || a.value.parent?.agentId !== parentId) {
          await this.children.remove(parentId, c.namespace, c.name); // stale: that child is gone
          continue;
        }
        if (seen.has(a.value.agentId)) continue;
        seen.add(a.value.agentId);
        try {
          children.push(await this.revokeOne(a.value.namespace, a.value.name, `parent agent ${parentId} revoked`));
          queue.push(a.value.agentId);
        } catch (err) {
          if (!(err instanceof ControlPlaneError && err.code === CpErrorCode.NotFound)) throw err;
        }
      }
    }
    return { revoked, children };
  }

  private async revokeOne(namespace: string, name: string, reason: string): Promise<RevocationRecord> {
    if (!isLabel(namespace) || !isLabel(name)) throw badRequest('namespace and name must be DNS labels');
    const key = agentKey(namespace, name);
    for (;;) {
      const cur = await getJson<AgentRecord>(this.b.agents, key);
      if (!cur) throw new ControlPlaneError(CpErrorCode.NotFound, `no agent ${name} in namespace ${namespace}`);
      const a = cur.value;
      const rec: RevocationRecord = { agentId: a.agentId, name, namespace, publicKey: a.publicKey, jti: a.jti, revokedAt: this.opts.clock.now() };
      // Bar the key first, so a concurrent enrollment or endpoint update sees the revocation.
      await casUpdate(this.b.revocations, pubkeyKey(a.publicKey), () => rec);
      try {
        await this.b.agents.delete(key, cur.revision);
      } catch (err) {
        if (err instanceof KvConflictError) continue;
        throw err;
      }
      await casUpdate(this.b.revocations, key, () => rec);
      if (a.parent) await this.children.remove(a.parent.agentId, namespace, name);
      if (a.address) await this.ipam.free(namespace, a.address.offset, key);
      const pk = await this.b.agents.get(pubkeyKey(a.publicKey));
      if (pk) await this.b.agents.delete(pk.key, pk.revision).catch(() => undefined);
      // The launcher's NATS user stops working now: the server closes its connections and refuses it.
      if (a.natsUser) await this.opts.natsUsers?.revoke([a.natsUser]);
      this.stats.revocations++;
      this.emitEvent({ type: 'enrollment.revoked', agentId: a.agentId, namespace, name, reason });
      return rec;
    }
  }

  /**
   * An operator edits an agent's labels (compare-and-set on its record): `set` adds or replaces,
   * `remove` deletes. Launchers see the change through their directory watch and re-bind their
   * policies' "peers" rules. Returns the labels after the edit. Errors: EBADREQ (one problem per
   * line), ENOTFOUND.
   */
  async setLabels(namespace: string, name: string, body: unknown, by = LOCAL_CALLER): Promise<Record<string, string>> {
    if (!isLabel(namespace) || !isLabel(name)) throw badRequest('namespace and name must be DNS labels');
    const edit = parseLabelBody(body);
    let out: Record<string, string> = {};
    let changed: string | undefined; // the agent's id when the edit changed something (audited)
    await casUpdate<AgentRecord>(this.b.agents, agentKey(namespace, name), (a) => {
      if (!a) throw new ControlPlaneError(CpErrorCode.NotFound, `no agent ${name} in namespace ${namespace}`);
      const res = applyLabelEdit(a.labels, edit);
      if (!res.ok) throw badRequest(res.problem);
      out = { ...res.labels };
      changed = undefined;
      if (JSON.stringify(out) === JSON.stringify(a.labels ?? {})) return undefined;
      changed = a.agentId;
      const { labels: _old, ...rest } = a;
      return { ...rest, ...(Object.keys(out).length ? { labels: out } : {}), updatedAt: this.opts.clock.now() };
    });
    if (changed) this.emitEvent({ type: 'labels.changed', agentId: changed, namespace, name, labels: out, by });
    return out;
  }

  /**
   * A static peer (#17 item 6): a plain WireGuard host (wireguard-go, wg-quick) the operator configures by
   * hand joins the directory without a token or a launcher. Body: {namespace, name, publicKey (base64),
   * endpoint? ("host:port", where its UDP socket listens)}. It gets an address from the namespace's pool
   * like any agent, is Active at once, carries no JWT and no NATS user (it never talks to the control
   * plane), and leaves with `agent revoke`. Every launcher of the namespace configures it as a peer; its
   * traffic is decided by the receiving launchers' pumps like anyone's. Errors: EBADREQ, ENAME_TAKEN,
   * EKEY_IN_USE, EIPAM_EXHAUSTED.
   */
  async addStaticPeer(body: unknown): Promise<AgentRecord> {
    const r = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const { namespace, name, publicKey, endpoint } = r;
    if (!isLabel(namespace) || !isLabel(name)) throw badRequest('namespace and name must be DNS labels');
    if (!isWgKey(publicKey)) throw badRequest('publicKey must be a base64 WireGuard public key (32 bytes), as `wg pubkey` prints it');
    if (endpoint !== undefined && !isEndpoint(endpoint)) throw badRequest('endpoint must be host:port where the peer\'s WireGuard UDP socket listens');
    if (await this.b.revocations.get(pubkeyKey(publicKey))) throw new ControlPlaneError(CpErrorCode.Revoked, 'this public key has been revoked; generate a new key with `wg genkey`');
    const key = agentKey(namespace, name);
    const now = this.opts.clock.now();
    const rec: AgentRecord = {
      agentId: randomUUID(),
      name,
      namespace,
      publicKey,
      status: AgentStatus.Pending,
      ...(endpoint ? { endpoint } : {}),
      allowedTools: [],
      allowedNamespaces: [],
      modes: DEFAULT_MODES,
      tokenId: 'static',
      createdAt: now,
      updatedAt: now,
    };
    let rev: number;
    try {
      rev = await this.b.agents.create(key, encodeJson(rec));
    } catch (err) {
      if (err instanceof KvConflictError) throw new ControlPlaneError(CpErrorCode.NameTaken, `agent ${name} already exists in namespace ${namespace}; pick another name`);
      throw err;
    }
    const undo: (() => Promise<unknown>)[] = [() => this.b.agents.delete(key, rev)];
    try {
      const pkKey = pubkeyKey(publicKey);
      try {
        const pkRev = await this.b.agents.create(pkKey, encodeJson({ namespace, name }));
        undo.push(() => this.b.agents.delete(pkKey, pkRev));
      } catch (err) {
        if (err instanceof KvConflictError) throw new ControlPlaneError(CpErrorCode.KeyInUse, 'this public key is already in the directory as another peer; generate a new key');
        throw err;
      }
      const addr = await this.ipam.allocate(namespace, key, publicKey);
      undo.push(() => this.ipam.free(namespace, addr.offset, key));
      const active: AgentRecord = { ...rec, status: AgentStatus.Active, address: { ipv4: addr.ipv4, ipv6: addr.ipv6, offset: addr.offset }, updatedAt: this.opts.clock.now() };
      await this.b.agents.update(key, encodeJson(active), rev);
      this.emitEvent({ type: 'enrollment.enrolled', agentId: active.agentId, namespace, name, ipv4: addr.ipv4, ipv6: addr.ipv6, tokenId: 'static', expiresAt: 0 });
      return active;
    } catch (err) {
      for (const u of undo.reverse()) await u().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Replace a namespace's policy (validated first); audited as `policy.set` with the SHA-256 of the
   * policy's JSON text and its rule count, in `by`'s name (default "local"). Errors: EBADREQ.
   */
  async setPolicy(namespace: string, policy: unknown, by = LOCAL_CALLER): Promise<NamespacePolicyRecord> {
    if (!isLabel(namespace)) throw badRequest('namespace must be a DNS label');
    if (typeof policy !== 'object' || policy === null || Array.isArray(policy)) throw badRequest('policy must be a JSON object');
    this.checkPolicy(policy);
    const rec: NamespacePolicyRecord = { namespace, policy, updatedAt: this.opts.clock.now() };
    await casUpdate(this.b.policies, namespace, () => rec);
    const p = policy as { egress?: unknown; ingress?: unknown };
    const rules = (Array.isArray(p.egress) ? p.egress.length : 0) + (Array.isArray(p.ingress) ? p.ingress.length : 0);
    this.emitEvent({ type: 'policy.set', namespace, policyHash: `sha256:${createHash('sha256').update(JSON.stringify(policy)).digest('hex')}`, rules, by });
    return rec;
  }

  async getPolicy(namespace: string): Promise<NamespacePolicyRecord | null> {
    if (!isLabel(namespace)) throw badRequest('namespace must be a DNS label');
    return (await getJson<NamespacePolicyRecord>(this.b.policies, namespace))?.value ?? null;
  }

  private emitEvent(e: ControlPlaneEvent): void {
    try {
      this.opts.onEvent?.(e);
    } catch {
      // the audit sink's failure must not fail an enrollment that already happened
    }
  }

  private checkPolicy(p: unknown): void {
    if (!this.opts.validatePolicy) return;
    try {
      this.opts.validatePolicy(p);
    } catch (err) {
      if (err instanceof ControlPlaneError) throw err;
      throw badRequest(`invalid policy: ${(err as Error).message}`);
    }
  }

  /** Address math exposed for tooling (e.g. `agent ls` of a namespace's subnet). */
  addressOf(subnetIndex: number, offset: number) {
    return addressOf(this.ipam.plan, subnetIndex, offset);
  }
}

/** The body of a label edit: {"set": {k: v}, "remove": [k]}; every problem, one per line. */
function parseLabelBody(body: unknown): LabelEdit {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('body must be {"set": {"key": "value"}, "remove": ["key"]}');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (k !== 'set' && k !== 'remove') throw badRequest(`unknown field ${JSON.stringify(k)}; use "set" and "remove"`);
  const set = b.set ?? {};
  const remove = b.remove ?? [];
  const problems = labelsProblems(set);
  if (!Array.isArray(remove) || !remove.every((k) => typeof k === 'string')) problems.push('remove must be a list of label keys');
  else for (const k of remove as string[]) {
    const p = labelKeyProblem(k);
    if (p) problems.push(p);
    else if (Object.hasOwn(set as object, k)) problems.push(`label ${k} is both set and removed`);
  }
  if (problems.length) throw badRequest(problems.join('\n'));
  return { set: set as Record<string, string>, remove: remove as string[] };
}

/** The policy a token names: its inline policy, a preset resolved by `resolvePreset`, or null when none. */
export function resolvePolicyRef(ref: PolicyRef | undefined, resolvePreset?: (name: string) => unknown): unknown {
  if (!ref) return null;
  if ('inline' in ref) return ref.inline;
  return resolvePreset?.(ref.preset) ?? { preset: ref.preset };
}

function parseEnrollRequest(req: unknown): {
  token: string;
  publicKey: string;
  name: string;
  endpoint?: string;
  natsPublicKey?: string;
  challenge?: string;
  proof?: string;
  advertiseRoutes?: unknown;
  exitNode?: unknown;
} {
  if (typeof req !== 'object' || req === null || Array.isArray(req)) throw badRequest('enrollment request must be a JSON object');
  const r = req as Record<string, unknown>;
  if (!isWellFormedToken(r.token)) throw badRequest('malformed enrollment token');
  if (!isWgKey(r.publicKey)) throw badRequest('publicKey must be a base64 WireGuard public key (32 bytes)');
  if (!isLabel(r.name)) throw badRequest('name must be a DNS label (a-z, 0-9, -; at most 63)');
  if (r.endpoint !== undefined && !isEndpoint(r.endpoint)) throw badRequest('endpoint must be host:port or [v6]:port');
  if (r.natsPublicKey !== undefined && !isUserPublicKey(r.natsPublicKey)) throw badRequest('natsPublicKey must be an nkey user public key (U...)');
  const opt = (k: string) => (typeof r[k] === 'string' && (r[k] as string).length <= 200 ? (r[k] as string) : undefined);
  return {
    token: r.token,
    publicKey: r.publicKey,
    name: r.name,
    endpoint: r.endpoint as string | undefined,
    natsPublicKey: r.natsPublicKey,
    challenge: opt('challenge'),
    proof: opt('proof'),
    advertiseRoutes: r.advertiseRoutes,
    exitNode: r.exitNode,
  };
}

async function ensureCluster(config: KvBucket, now: number): Promise<Required<ClusterConfig>> {
  for (;;) {
    const cur = await getJson<ClusterConfig>(config, 'cluster');
    if (cur?.value.possessionKey) return cur.value as Required<ClusterConfig>;
    if (cur) {
      // A cluster from before re-enrollment challenges: add its key (compare-and-set; another instance may win).
      const next = { ...cur.value, possessionKey: newX25519PrivateKey().toString('base64url') };
      try {
        await config.update('cluster', encodeJson(next), cur.revision);
        return next;
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err;
        continue;
      }
    }
    const fresh: Required<ClusterConfig> = { clusterId: randomUUID(), jwtSecret: randomBytes(32).toString('base64url'), createdAt: now, possessionKey: newX25519PrivateKey().toString('base64url') };
    try {
      await config.create('cluster', encodeJson(fresh));
      return fresh;
    } catch (err) {
      if (!(err instanceof KvConflictError)) throw err; // another instance created it first: read theirs
    }
  }
}

/** Delegation fields a token passes on to the agent it enrolls. */
function delegatedFrom(t: TokenRecord): Pick<AgentRecord, 'parent' | 'notAfter'> {
  return { ...(t.parent ? { parent: t.parent } : {}), ...(t.notAfter !== undefined ? { notAfter: t.notAfter } : {}) };
}

