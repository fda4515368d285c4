import { KvOp, decodeJson, watchCurrent, type KvBucket, type KvChange, type KvWatch } from './kv.js';
import { peerRoutes } from './routes.js';
import { AgentStatus, type AgentRecord, type Peer } from './types.js';

/**
 * The agent records of some namespaces, kept current by KV watches on the agents bucket (no polling).
 * One cache serves both sides: the control plane (every namespace, for peer lists and quotas) and a
 * launcher's directory watcher (its own and allowed namespaces).
 *
 * Keys are `a.<namespace>.<name>`. A record that does not parse is dropped from the cache (as a delete).
 */
export class AgentCache {
  private readonly records = new Map<string, AgentRecord>();
  private readonly watches: KvWatch[] = [];
  private stopped = false;

  private constructor(private readonly onChange: (key: string) => void) {}

  /**
   * Watch `filters` (KV key filters such as `a.*.*` or `a.prod.*`) and resolve once every watch has
   * delivered its current values. `onChange(key)` runs after each put or delete is applied, initial
   * values included. On failure, the watches already started are stopped and the error is thrown.
   */
  static async start(agents: KvBucket, filters: string[], onChange: (key: string) => void = () => undefined): Promise<AgentCache> {
    const cache = new AgentCache(onChange);
    try {
      await Promise.all(
        filters.map(async (f) => {
          const w = await watchCurrent(agents, f, (c) => cache.apply(c));
          if (cache.stopped) w.stop();
          else cache.watches.push(w);
        }),
      );
    } catch (err) {
      cache.stop();
      throw err;
    }
    return cache;
  }

  /** Every cached record, in no particular order. */
  values(): IterableIterator<AgentRecord> {
    return this.records.values();
  }

  /**
   * The WireGuard peers of agent `self`: active agents of `namespaces` except `self`, sorted by
   * `namespace.name`.
   */
  peers(self: { namespace: string; name: string }, namespaces: ReadonlySet<string>): Peer[] {
    const out: Peer[] = [];
    for (const a of this.records.values()) {
      if (a.status !== AgentStatus.Active || !namespaces.has(a.namespace)) continue;
      if (a.namespace === self.namespace && a.name === self.name) continue;
      out.push(peerOf(a));
    }
    return out.sort((x, y) => `${x.namespace}.${x.name}`.localeCompare(`${y.namespace}.${y.name}`));
  }

  /** Stop every watch (idempotent). */
  stop(): void {
    this.stopped = true;
    for (const w of this.watches.splice(0)) w.stop();
  }

  private apply(c: KvChange): void {
    if (c.op === KvOp.Delete) this.records.delete(c.key);
    else {
      try {
        this.records.set(c.key, decodeJson<AgentRecord>(c.value));
      } catch {
        this.records.delete(c.key);
      }
    }
    this.onChange(c.key);
  }
}

/** The peer entry (keys, overlay addresses as /32 and /128, endpoint, labels, approved routes) a launcher configures for `a`. */
export function peerOf(a: AgentRecord): Peer {
  const routes = peerRoutes(a);
  return {
    name: a.name,
    namespace: a.namespace,
    publicKey: a.publicKey,
    allowedIPs: a.address ? [`${a.address.ipv4}/32`, `${a.address.ipv6}/128`] : [],
    ...(a.endpoint ? { endpoint: a.endpoint } : {}),
    ...(a.labels && Object.keys(a.labels).length > 0 ? { labels: a.labels } : {}),
    ...(routes ? { routes } : {}),
  };
}
