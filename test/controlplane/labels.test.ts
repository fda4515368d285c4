import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryKvStore } from '../../src/controlplane/kv.js';
import { ControlPlaneService } from '../../src/controlplane/service.js';

const key = () => randomBytes(32).toString('base64');

describe('peer labels in ControlPlaneService (in-memory KV)', () => {
  async function setup() {
    const svc = await ControlPlaneService.open({ store: new MemoryKvStore(), clock: new ManualClock(Date.parse('2026-01-01T00:00:00Z')) });
    const { token, record } = await svc.createToken({ namespace: 'team', limit: 2, labels: { role: 'db', 'example.com/tier': '1' } });
    return { svc, token, record };
  }

  it('a token\'s labels go to the agents it enrolls and to their peers\' directory', async () => {
    const { svc, token, record } = await setup();
    expect(record.labels).toEqual({ role: 'db', 'example.com/tier': '1' });
    await svc.enroll({ token, publicKey: key(), name: 'db1' });
    const b = await svc.enroll({ token, publicKey: key(), name: 'other' });
    expect(b.peers).toEqual([expect.objectContaining({ name: 'db1', labels: { role: 'db', 'example.com/tier': '1' } })]);
    expect((await svc.listAgents('team')).map((a) => a.labels)).toEqual([{ role: 'db', 'example.com/tier': '1' }, { role: 'db', 'example.com/tier': '1' }]);
  });

  it('an operator sets and removes labels; the directory follows', async () => {
    const { svc, token } = await setup();
    await svc.enroll({ token, publicKey: key(), name: 'db1' });
    expect(await svc.setLabels('team', 'db1', { set: { role: 'web' }, remove: ['example.com/tier'] })).toEqual({ role: 'web' });
    expect(await svc.setLabels('team', 'db1', { remove: ['role'] })).toEqual({});
    expect((await svc.listAgents('team'))[0].labels).toEqual({});
  });

  it('bad labels are refused with every problem on its own line, and nothing changes', async () => {
    const { svc, token } = await setup();
    await svc.enroll({ token, publicKey: key(), name: 'db1' });
    const err = await svc.setLabels('team', 'db1', { set: { '-bad': 'x', role: 'a b' }, remove: ['role'] }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'EBADREQ' });
    expect((err as Error).message.split('\n')).toHaveLength(3);
    expect((await svc.listAgents('team'))[0].labels).toEqual({ role: 'db', 'example.com/tier': '1' });
    await expect(svc.setLabels('team', 'nobody', { set: { a: 'b' } })).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(svc.setLabels('team', 'db1', { add: {} })).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(svc.createToken({ namespace: 'team', labels: { name: 'x' } })).rejects.toMatchObject({ code: 'EBADREQ', message: expect.stringMatching(/reserved/) });
  });
});
