import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { CHILD_INDEX_DONE, childKey } from '../../src/controlplane/children.js';
import { MemoryKvStore, type KvBucket, type KvStore } from '../../src/controlplane/kv.js';
import { ControlPlaneService } from '../../src/controlplane/service.js';
import { BUCKETS } from '../../src/controlplane/types.js';

/** Counts reads of the agents bucket, to show what a revocation touches. */
class CountingStore implements KvStore {
  reads = 0;
  listed: string[] = [];
  constructor(private readonly inner: KvStore) {}
  async bucket(name: string): Promise<KvBucket> {
    const b = await this.inner.bucket(name);
    if (name !== BUCKETS.agents) return b;
    return new Proxy(b, {
      get: (t, p, r) => {
        if (p === 'get') return (k: string) => ((this.reads++), t.get(k));
        if (p === 'keys') return (f?: string) => (this.listed.push(f ?? '>'), t.keys(f));
        const v = Reflect.get(t, p, r) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
  }
}

const key = () => randomBytes(32).toString('base64');

async function setup(store: KvStore, others: number) {
  const clock = new ManualClock(Date.parse('2025-01-01T00:00:00Z'));
  const svc = await ControlPlaneService.open({ store, clock, jwtTtlMs: 2 * 3600_000 });
  const { token: many } = await svc.createToken({ namespace: 'crowd', limit: others, ttl: '1h' });
  for (let i = 0; i < others; i++) await svc.enroll({ token: many, publicKey: key(), name: `o${i}` });
  const { token } = await svc.createToken({ namespace: 'team', allowedTools: ['list_peers', 'delegate'], ttl: '1h' });
  const p = await svc.enroll({ token, publicKey: key(), name: 'boss' });
  const kid = await svc.enroll({ token: (await svc.delegate(p.jwt, { allowedTools: ['list_peers', 'delegate'] })).token, publicKey: key(), name: 'kid' });
  await svc.enroll({ token: (await svc.delegate(kid.jwt, { allowedTools: ['list_peers'] })).token, publicKey: key(), name: 'grandkid' });
  return svc;
}

describe('revocation finds delegated children through the index (children.ts)', () => {
  it('reads the same number of agent records with 5 or 250 unrelated agents, and never lists every agent', async () => {
    const reads: number[] = [];
    for (const others of [5, 250]) {
      const store = new CountingStore(new MemoryKvStore());
      const svc = await setup(store, others);
      store.reads = 0;
      store.listed = [];
      const r = await svc.revokeAgentTree('team', 'boss');
      expect(r.children.map((c) => c.name).sort()).toEqual(['grandkid', 'kid']);
      expect(store.listed.filter((f) => f.startsWith('a.'))).toEqual([]);
      reads.push(store.reads);
      expect(await svc.listAgents('team')).toEqual([]);
      expect(await svc.listAgents('crowd')).toHaveLength(others);
      // The index forgets revoked children.
      const agents = await store.bucket(BUCKETS.agents);
      expect(await agents.keys('c.>')).toEqual([]);
      svc.close();
    }
    expect(reads[1]).toBe(reads[0]);
  });

  it('agents enrolled before the index existed are indexed when a control plane opens (backfill)', async () => {
    const mem = new MemoryKvStore();
    const svc = await setup(mem, 3);
    svc.close();
    // Forget the index, as a store written by an earlier version would be.
    const agents = await mem.bucket(BUCKETS.agents);
    for (const k of await agents.keys('c.>')) await agents.delete(k);
    await agents.delete(CHILD_INDEX_DONE);
    expect(await agents.keys('c.>')).toEqual([]);

    const again = await ControlPlaneService.open({ store: mem, clock: new ManualClock(Date.parse('2025-01-01T00:00:00Z')), jwtTtlMs: 2 * 3600_000 });
    expect(await agents.keys('c.>')).toHaveLength(2);
    expect(await agents.get(CHILD_INDEX_DONE)).not.toBeNull();
    const r = await again.revokeAgentTree('team', 'boss');
    expect(r.children.map((c) => c.name).sort()).toEqual(['grandkid', 'kid']);
    again.close();
  });

  it('a stale index key (its child is gone) is skipped and removed, and revokes nothing else', async () => {
    const mem = new MemoryKvStore();
    const svc = await setup(mem, 2);
    const boss = (await svc.listAgents('team')).find((a) => a.name === 'boss')!;
    const agents = await mem.bucket(BUCKETS.agents);
    await agents.create(childKey(boss.agentId, 'crowd', 'o1'), new Uint8Array([123, 125]));
    const r = await svc.revokeAgentTree('team', 'boss');
    expect(r.children.map((c) => c.name).sort()).toEqual(['grandkid', 'kid']);
    expect((await svc.listAgents('crowd')).map((a) => a.name).sort()).toEqual(['o0', 'o1']);
    expect(await agents.keys('c.>')).toEqual([]);
    svc.close();
  });
});
