import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { routePeer } from '../support/route-peer.js';
import { ManualClock } from '../../src/clock.js';
import { MemoryKvStore } from '../../src/controlplane/kv.js';
import { MAX_ROUTES, mergeAdvertised, parseAdvertised, peerAllowedIPs } from '../../src/controlplane/routes.js';
import { ControlPlaneService } from '../../src/controlplane/service.js';
import type { ControlPlaneEvent, Peer } from '../../src/controlplane/types.js';

const key = () => randomBytes(32).toString('base64');
const OVERLAY = ['10.77.0.0/16', 'fd77::/48'];

describe('parseAdvertised: what a peer may advertise', () => {
  it('canonical CIDRs, sorted and de-duplicated; exitNode adds both default routes', () => {
    expect(parseAdvertised(['10.200.0.0/24', '192.168.0.0/16', '10.200.0.0/24'], undefined, OVERLAY)).toEqual(['10.200.0.0/24', '192.168.0.0/16']);
    expect(parseAdvertised(undefined, true, OVERLAY)).toEqual(['0.0.0.0/0', '::/0']);
    expect(parseAdvertised(['2001:DB8::/32'], false, OVERLAY)).toEqual(['2001:db8::/32']);
  });

  it('refuses host bits, garbage, overlay overlap, loopback/link-local/multicast and too many routes, every problem on its own line', () => {
    const err = (() => {
      try {
        parseAdvertised(['10.200.0.1/24', 'nope', '10.0.0.0/8', '10.77.3.0/24', '127.0.0.0/16', 'fe80::/64', '224.1.0.0/16', '10.200.0.1'], undefined, OVERLAY);
      } catch (e) {
        return e as Error & { code: string };
      }
    })();
    expect(err?.code).toBe('EBADREQ');
    const lines = err!.message.split('\n');
    expect(lines).toHaveLength(8);
    expect(lines[0]).toMatch(/host bits.*10\.200\.0\.0\/24/);
    expect(lines[2]).toMatch(/overlay pool 10\.77\.0\.0\/16/); // 10.0.0.0/8 contains the pool
    expect(lines[3]).toMatch(/overlay pool/);
    const many = Array.from({ length: MAX_ROUTES + 1 }, (_, i) => `172.16.${i}.0/24`);
    expect(() => parseAdvertised(many, undefined, OVERLAY)).toThrow(/at most 32/);
    expect(() => parseAdvertised('10.0.0.0/8', undefined, OVERLAY)).toThrow(/list of CIDR/);
    expect(() => parseAdvertised([], 'yes', OVERLAY)).toThrow(/exitNode/);
  });

  it('merge keeps the state of routes still advertised, adds new ones pending, drops the rest', () => {
    const cur = [
      { cidr: '10.1.0.0/16', state: 'approved' as const, advertisedAt: 1, decidedAt: 2, decidedBy: 'ops' },
      { cidr: '10.2.0.0/16', state: 'approved' as const, advertisedAt: 1, decidedAt: 2 },
    ];
    expect(mergeAdvertised(cur, ['10.1.0.0/16', '10.3.0.0/16'], 9)).toEqual([cur[0], { cidr: '10.3.0.0/16', state: 'pending', advertisedAt: 9 }]);
  });
});

describe('peerAllowedIPs: directory -> WireGuard AllowedIPs (tie rule)', () => {
  const peer = routePeer;

  it('different prefix lengths are both kept (longest prefix decides per packet); the same prefix goes to the older approval, then the lower key', () => {
    const a = peer('a', 'BBBB', [{ cidr: '10.0.0.0/8', approvedAt: 5 }, { cidr: '10.200.0.0/24', approvedAt: 7 }]);
    const b = peer('bb', 'CCCC', [{ cidr: '10.200.0.0/24', approvedAt: 6 }]);
    const c = peer('ccc', 'AAAA', [{ cidr: '10.9.0.0/16', approvedAt: 6 }]);
    const d = peer('dddd', 'DDDD', [{ cidr: '10.9.0.0/16', approvedAt: 6 }]);
    const m = peerAllowedIPs([a, b, c, d]);
    expect(m.get('BBBB')).toEqual(['10.77.0.1/32', '10.0.0.0/8']);
    expect(m.get('CCCC')).toEqual(['10.77.0.2/32', '10.200.0.0/24']); // older approval (6 < 7)
    expect(m.get('AAAA')).toEqual(['10.77.0.3/32', '10.9.0.0/16']); // same time: lower key
    expect(m.get('DDDD')).toEqual(['10.77.0.4/32']);
    // Order of the directory does not matter.
    expect(peerAllowedIPs([d, c, b, a])).toEqual(m);
  });

  it('exit routes go only to the chosen exit node', () => {
    const exit = [{ cidr: '0.0.0.0/0', approvedAt: 1 }, { cidr: '::/0', approvedAt: 1 }];
    const x = peer('x', 'XXXX', exit);
    const y = peer('yy', 'YYYY', exit);
    expect(peerAllowedIPs([x, y]).get('XXXX')).toEqual(['10.77.0.1/32']);
    const chosen = peerAllowedIPs([x, y], 'yy');
    expect(chosen.get('YYYY')).toEqual(['10.77.0.2/32', '0.0.0.0/0', '::/0']);
    expect(chosen.get('XXXX')).toEqual(['10.77.0.1/32']);
    expect(peerAllowedIPs([x, y], 'ns.x').get('XXXX')).toEqual(['10.77.0.1/32', '0.0.0.0/0', '::/0']);
    expect(peerAllowedIPs([x, y], 'other.x').get('XXXX')).toEqual(['10.77.0.1/32']);
  });
});

describe('routes in ControlPlaneService (in-memory KV)', () => {
  async function setup() {
    const events: ControlPlaneEvent[] = [];
    const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
    const svc = await ControlPlaneService.open({ store: new MemoryKvStore(), clock, onEvent: (e) => events.push(e) });
    const { token } = await svc.createToken({ namespace: 'team', limit: 5 });
    return { svc, token, events, clock };
  }
  const routesOf = (peers: Peer[], name: string) => peers.find((p) => p.name === name)?.routes;

  it('an advertised route is pending and out of the directory until approved; reject and withdraw take it out again; all audited', async () => {
    const { svc, token, events, clock } = await setup();
    await svc.enroll({ token, publicKey: key(), name: 'router', advertiseRoutes: ['10.200.0.0/24'] });
    const sb = await svc.enroll({ token, publicKey: key(), name: 'sb' });
    expect(routesOf(sb.peers, 'router')).toBeUndefined();
    expect(await svc.routes.list({ state: 'pending' })).toEqual([expect.objectContaining({ namespace: 'team', name: 'router', cidr: '10.200.0.0/24', exit: false })]);

    clock.advance(1000);
    await svc.routes.decide('approve', 'team', 'router', { cidr: '10.200.0.0/24', by: 'alice' });
    const approvedAt = clock.now();
    expect(routesOf(svc.peersFor({ namespace: 'team', name: 'sb', allowedNamespaces: [] }), 'router')).toEqual([{ cidr: '10.200.0.0/24', approvedAt }]);
    // Idempotent: approving again changes nothing and audits nothing.
    await svc.routes.decide('approve', 'team', 'router', { cidr: '10.200.0.0/24' });

    await svc.routes.decide('reject', 'team', 'router', { cidr: '10.200.0.0/24' });
    expect(routesOf(svc.peersFor({ namespace: 'team', name: 'sb', allowedNamespaces: [] }), 'router')).toBeUndefined();
    await svc.routes.decide('withdraw', 'team', 'router', { cidr: '10.200.0.0/24' });
    expect(await svc.routes.list()).toEqual([]);

    const changes = events.filter((e) => e.type === 'route.changed').map((e) => (e.type === 'route.changed' ? `${e.change} ${e.cidr} ${e.by}` : ''));
    expect(changes).toEqual(['advertised 10.200.0.0/24 agent:router', 'approved 10.200.0.0/24 alice', 'rejected 10.200.0.0/24 admin', 'withdrawn 10.200.0.0/24 admin']);
  });

  it('an exit node is approved with "exit"; bad input changes nothing', async () => {
    const { svc, token } = await setup();
    await svc.enroll({ token, publicKey: key(), name: 'exit', exitNode: true });
    await expect(svc.routes.decide('approve', 'team', 'exit', { cidr: '10.9.0.0/16' })).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(svc.routes.decide('approve', 'team', 'nobody', { cidr: 'exit' })).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(svc.routes.decide('approve', 'team', 'exit', { cidr: '0.0.0.1/0' })).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(svc.routes.decide('bless', 'team', 'exit', { cidr: 'exit' })).rejects.toMatchObject({ code: 'EBADREQ' });
    expect((await svc.routes.list()).map((r) => r.state)).toEqual(['pending', 'pending']);
    const rows = await svc.routes.decide('approve', 'team', 'exit', { cidr: 'exit' });
    expect(rows.map((r) => `${r.cidr} ${r.state} ${r.exit}`)).toEqual(['::/0 approved true', '0.0.0.0/0 approved true']);
  });

  it('an enrollment with a bad route is refused and claims nothing', async () => {
    const { svc, token } = await setup();
    await expect(svc.enroll({ token, publicKey: key(), name: 'r', advertiseRoutes: ['10.77.0.0/24'] })).rejects.toMatchObject({ code: 'EBADREQ' });
    expect(await svc.listAgents('team')).toEqual([]);
  });

  it('the agent re-advertises with its JWT: kept routes keep their approval, new ones wait, missing ones are withdrawn', async () => {
    const { svc, token } = await setup();
    const r = await svc.enroll({ token, publicKey: key(), name: 'router', advertiseRoutes: ['10.1.0.0/16', '10.2.0.0/16'] });
    await svc.routes.decide('approve', 'team', 'router', { cidr: '10.1.0.0/16' });
    const res = await svc.updateRoutes({ jwt: r.jwt, advertiseRoutes: ['10.1.0.0/16', '10.3.0.0/16'] });
    expect(res.routes).toEqual([{ cidr: '10.1.0.0/16', state: 'approved' }, { cidr: '10.3.0.0/16', state: 'pending' }]);
    await expect(svc.updateRoutes({ jwt: 'x.y.z', advertiseRoutes: [] })).rejects.toMatchObject({ code: 'EUNAUTHORIZED' });
  });
});

describe('approve-route through approvals (the MCP write tool proposes it)', () => {
  it('a proposed route approval changes nothing until a human approves; a second proposal of the same route goes stale', async () => {
    const { Approvals } = await import('../../src/controlplane/approvals.js');
    const { BUCKETS } = await import('../../src/controlplane/types.js');
    const { EGRESS_BUCKET } = await import('../../src/controlplane/egress.js');
    const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
    const store = new MemoryKvStore();
    const svc = await ControlPlaneService.open({ store, clock });
    const approvals = new Approvals({
      bucket: await store.bucket('lattice_approvals'),
      policies: await store.bucket(BUCKETS.policies),
      agents: await store.bucket(BUCKETS.agents),
      egress: await store.bucket(EGRESS_BUCKET),
      targets: svc,
      validatePolicy: () => undefined,
      clock,
      audit: () => undefined,
    });
    const { token } = await svc.createToken({ namespace: 'team', limit: 2 });
    await svc.enroll({ token, publicKey: key(), name: 'router', advertiseRoutes: ['10.200.0.0/24'] });
    await expect(approvals.propose({ kind: 'approve-route', namespace: 'team', name: 'router', cidr: '10.9.0.0/16', proposer: 'mcp' })).rejects.toMatchObject({ code: 'ENOTFOUND' });
    const p = await approvals.propose({ kind: 'approve-route', namespace: 'team', name: 'router', cidr: '10.200.0.0/24', proposer: 'mcp' });
    const q = await approvals.propose({ kind: 'approve-route', namespace: 'team', name: 'router', cidr: '10.200.0.0/24', proposer: 'mcp' });
    expect(p.diff).toContain('-10.200.0.0/24: pending');
    expect(p.diff).toContain('+10.200.0.0/24: approved');
    expect((await svc.routes.list())[0]!.state).toBe('pending');
    await approvals.approve(p.id, { by: 'alice' });
    expect((await svc.routes.list())[0]).toMatchObject({ state: 'approved', decidedBy: 'alice' });
    await expect(approvals.approve(q.id, { by: 'bob' })).rejects.toMatchObject({ code: 'EAPPROVAL_STALE' });
  });
});
