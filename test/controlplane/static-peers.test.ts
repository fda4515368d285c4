import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryKvStore } from '../../src/controlplane/kv.js';
import { ControlPlaneService } from '../../src/controlplane/service.js';

const key = () => randomBytes(32).toString('base64');

describe('static peers in ControlPlaneService (in-memory KV)', () => {
  async function setup() {
    const svc = await ControlPlaneService.open({ store: new MemoryKvStore(), clock: new ManualClock(Date.parse('2026-01-01T00:00:00Z')) });
    const { token } = await svc.createToken({ namespace: 'team', limit: 2 });
    return { svc, token };
  }

  it('a static peer gets an address, is in the directory of enrolled agents with its endpoint, and needs no token', async () => {
    const { svc, token } = await setup();
    const pk = key();
    const s = await svc.addStaticPeer({ namespace: 'team', name: 'wg1', publicKey: pk, endpoint: '192.0.2.7:51820' });
    expect(s).toMatchObject({ status: 'active', address: { ipv4: expect.stringMatching(/^10\.77\./) } });
    const a = await svc.enroll({ token, publicKey: key(), name: 'agent' });
    expect(a.peers).toEqual([expect.objectContaining({ name: 'wg1', publicKey: pk, endpoint: '192.0.2.7:51820', allowedIPs: [`${s.address!.ipv4}/32`, `${s.address!.ipv6}/128`] })]);
  });

  it('refuses a bad key, a taken name or key, and changes nothing', async () => {
    const { svc } = await setup();
    const pk = key();
    await svc.addStaticPeer({ namespace: 'team', name: 'wg1', publicKey: pk });
    await expect(svc.addStaticPeer({ namespace: 'team', name: 'wg2', publicKey: 'nope' })).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(svc.addStaticPeer({ namespace: 'team', name: 'wg2', publicKey: key(), endpoint: 'no port' })).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(svc.addStaticPeer({ namespace: 'team', name: 'wg1', publicKey: key() })).rejects.toMatchObject({ code: 'ENAME_TAKEN' });
    await expect(svc.addStaticPeer({ namespace: 'team', name: 'wg3', publicKey: pk })).rejects.toMatchObject({ code: 'EKEY_IN_USE' });
    expect((await svc.listAgents('team')).map((a) => a.name)).toEqual(['wg1']);
  });
});
