import { describe, it, expect } from 'vitest';
import { NamespaceExitDefaults } from '../../src/controlplane/namespaces.js';
import { MemoryKvStore } from '../../src/controlplane/kv.js';
import { ManualClock } from '../../src/clock.js';
import { BUCKETS, type ControlPlaneEvent } from '../../src/controlplane/types.js';

async function setup() {
  const events: ControlPlaneEvent[] = [];
  const d = new NamespaceExitDefaults({ config: await new MemoryKvStore().bucket(BUCKETS.config), clock: new ManualClock(), audit: (e) => events.push(e) });
  return { d, events };
}

describe('namespace default exit node', () => {
  it('is set, read back, changed and cleared, each change audited in the operator\'s name (a repeat is not)', async () => {
    const { d, events } = await setup();
    expect(await d.get('team')).toBeUndefined();
    expect(await d.set('team', { exitNode: 'exit' }, 'alice')).toEqual({ exitNode: 'exit', allowOptOut: false });
    expect(await d.get('team')).toEqual({ exitNode: 'exit', allowOptOut: false });
    await d.set('team', { exitNode: 'exit' }, 'alice');
    await d.set('team', { exitNode: 'edge.exit2', allowOptOut: true }, 'bob');
    expect(await d.get('team')).toEqual({ exitNode: 'edge.exit2', allowOptOut: true });
    expect(await d.get('other')).toBeUndefined();
    expect(await d.set('team', { exitNode: null }, 'carol')).toBeUndefined();
    expect(await d.get('team')).toBeUndefined();
    await d.set('team', { exitNode: null }, 'carol');
    expect(events).toEqual([
      { type: 'namespace.exit-node', namespace: 'team', exitNode: 'exit', allowOptOut: false, by: 'alice' },
      { type: 'namespace.exit-node', namespace: 'team', exitNode: 'edge.exit2', allowOptOut: true, by: 'bob' },
      { type: 'namespace.exit-node', namespace: 'team', exitNode: '', allowOptOut: false, by: 'carol' },
    ]);
  });

  it('refuses what is not a peer name, a non-boolean opt-out, a missing field and a bad namespace, changing nothing', async () => {
    const { d, events } = await setup();
    for (const body of [{ exitNode: 'a.b.c' }, { exitNode: 'Exit!' }, { exitNode: 7 }, { exitNode: 'exit', allowOptOut: 'yes' }, {}, null, []]) {
      await expect(d.set('team', body, 'alice')).rejects.toMatchObject({ code: 'EBADREQ' });
    }
    await expect(d.set('Team', { exitNode: 'exit' }, 'alice')).rejects.toMatchObject({ code: 'EBADREQ' });
    expect(await d.get('team')).toBeUndefined();
    expect(events).toEqual([]);
  });
});
