import { EventEmitter } from 'node:events';
import type { NatsConnection } from 'nats';
import { AgentCache, peerOf } from '../controlplane/agentcache.js';
import { KvOp, decodeJson, watchCurrent, type KvChange, type KvStore, type KvWatch } from '../controlplane/kv.js';
import { NatsKvStore } from '../controlplane/natskv.js';
import { pubkeyKey } from '../controlplane/service.js';
import { AgentStatus, BUCKETS, type NamespacePolicyRecord, type Peer, type RevocationRecord } from '../controlplane/types.js';

/**
 * Follows the control plane's directory for one agent through KV watches (no polling): the peers of
 * its namespaces, its namespace's policy, and its own revocation.
 *
 * Events (after `start()` resolves, which is after the initial state is loaded):
 *   'peers-changed'  (peers: Peer[])             a peer was added, moved (endpoint) or removed
 *   'policy-changed' (policy: unknown | null)    the namespace policy was set (null: removed)
 *   'revoked'        (rec: RevocationRecord)     this agent was revoked; tear the network down
 * An agent already revoked when the watch starts shows in `revoked` after `start()` (no event).
 */
export interface DirectoryWatcherOptions {
  store: KvStore;
  namespace: string;
  name: string;
  publicKey: string;
  allowedNamespaces?: string[];
}

export interface DirectoryEvents {
  'peers-changed': [peers: Peer[]];
  'policy-changed': [policy: unknown];
  revoked: [rec: RevocationRecord];
}

/**
 * The launcher's live view of its namespace through KV watches: peers (the watch-fed agent cache), the
 * namespace policy and revocations. Emits `peers-changed`, `policy-changed` and `revoked`; `start`
 * resolves once the current values are in, `stop` ends every watch.
 */
export class DirectoryWatcher extends EventEmitter<DirectoryEvents> {
  private agents?: AgentCache;
  private readonly watches: KvWatch[] = [];
  private readonly spaces: ReadonlySet<string>;
  private ready = false;
  private policyValue: unknown = null;
  private revocation?: RevocationRecord;
  private lastPeers = '';

  constructor(private readonly opts: DirectoryWatcherOptions) {
    super();
    this.spaces = new Set([opts.namespace, ...(opts.allowedNamespaces ?? [])]);
  }

  /** A watcher over the control plane's buckets on `nc` (binds to existing buckets only). */
  static forConnection(nc: NatsConnection, o: Omit<DirectoryWatcherOptions, 'store'>): DirectoryWatcher {
    return new DirectoryWatcher({ ...o, store: new NatsKvStore(nc, { bindOnly: true }) });
  }

  /** Active agents of the watched namespaces except this one, sorted by `namespace.name` (empty before start()). */
  get peers(): Peer[] {
    return this.agents?.peers(this.opts, this.spaces) ?? [];
  }

  /**
   * This agent's own directory entry (its approved routes: a router forwards for them), or undefined
   * before start() or while it is not active. A change of it emits 'peers-changed' too.
   */
  get self(): Peer | undefined {
    for (const a of this.agents?.values() ?? []) {
      if (a.namespace === this.opts.namespace && a.name === this.opts.name && a.status === AgentStatus.Active) return peerOf(a);
    }
    return undefined;
  }

  get policy(): unknown {
    return this.policyValue;
  }

  get revoked(): RevocationRecord | undefined {
    return this.revocation;
  }

  async start(): Promise<this> {
    const { store, namespace, publicKey } = this.opts;
    const [agents, policies, revocations] = await Promise.all([
      store.bucket(BUCKETS.agents),
      store.bucket(BUCKETS.policies),
      store.bucket(BUCKETS.revocations),
    ]);
    const watch = async (w: Promise<KvWatch>): Promise<void> => {
      this.watches.push(await w);
    };
    try {
      await Promise.all([
        AgentCache.start(agents, [...this.spaces].map((ns) => `a.${ns}.*`), () => this.onAgent()).then((c) => (this.agents = c)),
        watch(watchCurrent(policies, namespace, (c) => this.onPolicy(c))),
        watch(watchCurrent(revocations, pubkeyKey(publicKey), (c) => this.onRevocation(c))),
      ]);
    } catch (err) {
      this.stop();
      throw err;
    }
    this.ready = true;
    this.lastPeers = this.viewKey();
    return this;
  }

  /** Stop every watch (idempotent); no event follows. */
  stop(): void {
    this.agents?.stop();
    for (const w of this.watches.splice(0)) w.stop();
  }

  private onAgent(): void {
    if (!this.ready) return;
    // Only tell the launcher when what it configures (keys, addresses, endpoints) actually changed.
    const now = this.viewKey();
    if (now === this.lastPeers) return;
    this.lastPeers = now;
    this.emit('peers-changed', this.peers);
  }

  /** What 'peers-changed' compares: the peers and this agent's own approved routes. */
  private viewKey(): string {
    return JSON.stringify([this.peers, this.self?.routes ?? []]);
  }

  private onPolicy(c: KvChange): void {
    let next: unknown = null;
    if (c.op === KvOp.Put) {
      try {
        next = decodeJson<NamespacePolicyRecord>(c.value).policy;
      } catch {
        return;
      }
    }
    this.policyValue = next;
    if (this.ready) this.emit('policy-changed', next);
  }

  private onRevocation(c: KvChange): void {
    if (c.op !== KvOp.Put) return;
    try {
      this.revocation = decodeJson<RevocationRecord>(c.value);
    } catch {
      return;
    }
    // One found during start() is not emitted: the caller checks `revoked` once start() resolves.
    if (this.ready) this.emit('revoked', this.revocation);
  }
}
