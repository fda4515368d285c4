import { decodeJson, encodeJson, KvConflictError, type KvBucket } from './kv.js';
import type { AgentRecord } from './types.js';

/**
 * Delegated children by parent, in the agents bucket, so that revoking an agent costs what its subtree
 * costs, not what the namespace or the cluster holds:
 *
 *   c.<parentAgentId>.<ns>.<name>   {}   one key per delegated child (written when the child claims its name)
 *   cidx.v1                          {}   the index is complete (written once, after backfilling older agents)
 *
 * The index may hold keys of children that are gone (a crash between a revocation and the index delete):
 * readers check each child's record (`parent.agentId` must match), so a stale key costs one read, never a
 * wrong revocation. Launchers watch `a.<ns>.*` only and never see these keys.
 *
 * Ordering argument (why a child enrolling during its parent's revocation is never missed): the child
 * writes its pending record, then its index key, then checks whether its parent's key is revoked; the
 * revocation bars the parent's key, then lists the index. Either the child's check sees the bar, or the
 * listing sees the child's index key.
 */
export const CHILD_INDEX_DONE = 'cidx.v1';

/** The index key `c.<parentAgentId>.<namespace>.<name>` recording a delegated child under its parent. */
export function childKey(parentAgentId: string, namespace: string, name: string): string {
  return `c.${parentAgentId}.${namespace}.${name}`;
}

/**
 * Delegated children by parent, in the agents bucket: revocation lists `c.<parentId>.>` instead of
 * reading every agent, so its cost follows the size of the revoked subtree, not of the namespace.
 */
export class ChildIndex {
  constructor(private readonly agents: KvBucket) {}

  /** Record `namespace/name` as a child of `parentAgentId` (idempotent). */
  async add(parentAgentId: string, namespace: string, name: string): Promise<void> {
    try {
      await this.agents.create(childKey(parentAgentId, namespace, name), encodeJson({}));
    } catch (err) {
      if (!(err instanceof KvConflictError)) throw err; // already there
    }
  }

  /** Forget one child (idempotent). */
  async remove(parentAgentId: string, namespace: string, name: string): Promise<void> {
    await this.agents.delete(childKey(parentAgentId, namespace, name));
  }

  /** The children recorded for `parentAgentId` as {namespace, name}; may include stale ones (see above). */
  async children(parentAgentId: string): Promise<{ namespace: string; name: string }[]> {
    const keys = await this.agents.keys(`c.${parentAgentId}.*.*`);
    return keys.map((k) => {
      const [, , namespace, name] = k.split('.');
      return { namespace, name };
    });
  }

  /**
   * Agents enrolled before the index existed: add their keys once (one scan of every agent), then mark
   * the index complete. Safe to run from several instances at once (every write is idempotent).
   * Returns how many keys were added (0 when the index was already complete).
   */
  async backfill(): Promise<number> {
    if (await this.agents.get(CHILD_INDEX_DONE)) return 0;
    let added = 0;
    for (const k of await this.agents.keys('a.*.*')) {
      const e = await this.agents.get(k);
      if (!e) continue;
      let a: AgentRecord;
      try {
        a = decodeJson<AgentRecord>(e.value);
      } catch {
        continue;
      }
      if (!a.parent) continue;
      await this.add(a.parent.agentId, a.namespace, a.name);
      added++;
    }
    try {
      await this.agents.create(CHILD_INDEX_DONE, encodeJson({}));
    } catch (err) {
      if (!(err instanceof KvConflictError)) throw err;
    }
    return added;
  }
}
