import { EventEmitter } from 'node:events';
import type { NatsConnection } from 'nats';
import { KvOp, decodeJson, type KvChange, type KvStore, type KvWatch } from '../controlplane/kv.js';
import { NatsKvStore } from '../controlplane/natskv.js';
import { peerOf, pubkeyKey } from '../controlplane/service.js';
import { AgentStatus, BUCKETS, type AgentRecord, type NamespacePolicyRecord, type Peer, type RevocationRecord } from '../controlplane/types.js';

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

export class DirectoryWatcher extends EventEmitter<DirectoryEvents> {
  private readonly agents = new Map<string, AgentRecord>();
  private readonly watches: KvWatch[] = [];
  private ready = false;
  private policyValue: unknown = null;
  private revocation?: RevocationRecord;
  private lastPeers = '';

  constructor(private readonly opts: DirectoryWatcherOptions) {
    super();
  }

  /** A watcher over the control plane's buckets on `nc` (binds to existing buckets only). */
  static forConnection(nc: NatsConnection, o: Omit<DirectoryWatcherOptions, 'store'>): DirectoryWatcher {
    return new DirectoryWatcher({ ...o, store: new NatsKvStore(nc, { bindOnly: true }) });
  }

  get peers(): Peer[] {
    const out: Peer[] = [];
    for (const a of this.agents.values()) {
      if (a.status !== AgentStatus.Active) continue;
      if (a.namespace === this.opts.namespace && a.name === this.opts.name) continue;
      out.push(peerOf(a));
    }
    return out.sort((x, y) => `${x.namespace}.${x.name}`.localeCompare(`${y.namespace}.${y.name}`));
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
    const spaces = [...new Set([namespace, ...(this.opts.allowedNamespaces ?? [])])];
    const watchReady = async (w: (ready: () => void) => Promise<KvWatch>) => {
      let done!: () => void;
      const p = new Promise<void>((r) => (done = r));
      this.watches.push(await w(done));
      await p;
    };
    try {
      await Promise.all([
        ...spaces.map((ns) => watchReady((r) => agents.watch(`a.${ns}.*`, (c) => this.onAgent(c), r))),
        watchReady((r) => policies.watch(namespace, (c) => this.onPolicy(c), r)),
        watchReady((r) => revocations.watch(pubkeyKey(publicKey), (c) => this.onRevocation(c), r)),
      ]);
    } catch (err) {
      this.stop();
      throw err;
    }
    this.ready = true;
    this.lastPeers = JSON.stringify(this.peers);
    return this;
  }

  stop(): void {
    for (const w of this.watches.splice(0)) w.stop();
  }

  private onAgent(c: KvChange): void {
    if (c.op === KvOp.Delete) this.agents.delete(c.key);
    else {
      try {
        this.agents.set(c.key, decodeJson<AgentRecord>(c.value));
      } catch {
        this.agents.delete(c.key);
      }
    }
    if (!this.ready) return;
    // Only tell the launcher when what it configures (keys, addresses, endpoints) actually changed.
    const now = JSON.stringify(this.peers);
    if (now === this.lastPeers) return;
    this.lastPeers = now;
    this.emit('peers-changed', this.peers);
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
