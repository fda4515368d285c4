import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryKvStore } from '../../src/controlplane/kv.js';
import { ControlPlaneService } from '../../src/controlplane/service.js';
import { verifyAgentJwt } from '../../src/controlplane/jwt.js';
import { buildAgentTree, clampJwtTtl, planDelegation, type DelegationParent } from '../../src/controlplane/delegation.js';
import { ControlPlaneError } from '../../src/controlplane/types.js';

const NOW = Date.parse('2025-01-01T00:00:00Z');
const parent: DelegationParent = {
  agentId: 'p-1',
  name: 'boss',
  namespace: 'team',
  publicKey: randomBytes(32).toString('base64'),
  allowedTools: ['list_peers', 'get_policy', 'delegate'],
  allowedNamespaces: ['shared'],
  modes: { sandbox: 'gvisor', enforcement: 'audit' },
  jwtExpiresAt: NOW + 2 * 3600_000,
};

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as ControlPlaneError).code;
  }
  return undefined;
}

describe('planDelegation (pure rules)', () => {
  it('defaults: the parent namespace, all its tools, 1 h, limit 1, its modes, a parent ref and notAfter', () => {
    const r = planDelegation(parent, {}, NOW, 'id1');
    expect(r).toMatchObject({ id: 'id1', namespace: 'team', allowedTools: parent.allowedTools, allowedNamespaces: [], limit: 1, uses: 0, expiresAt: NOW + 3600_000, notAfter: parent.jwtExpiresAt, modes: parent.modes });
    expect(r.parent).toEqual({ agentId: 'p-1', namespace: 'team', name: 'boss', publicKey: parent.publicKey });
  });

  it('a subset of tools is granted; a superset is refused with EFORBIDDEN naming the extra tool', () => {
    expect(planDelegation(parent, { allowedTools: ['list_peers'] }, NOW, 'x').allowedTools).toEqual(['list_peers']);
    expect(planDelegation(parent, { allowedTools: [] }, NOW, 'x').allowedTools).toEqual([]);
    expect(code(() => planDelegation(parent, { allowedTools: ['list_peers', 'request_egress'] }, NOW, 'x'))).toBe('EFORBIDDEN');
    try {
      planDelegation(parent, { allowedTools: ['request_egress'] }, NOW, 'x');
    } catch (err) {
      expect((err as Error).message).toContain('request_egress');
    }
  });

  it('TTL is clamped to the parent JWT remaining lifetime', () => {
    expect(planDelegation(parent, { ttl: '30m' }, NOW, 'x').expiresAt).toBe(NOW + 30 * 60_000);
    expect(planDelegation(parent, { ttl: '365d' }, NOW, 'x').expiresAt).toBe(parent.jwtExpiresAt);
    expect(planDelegation(parent, { ttl: 10 * 3600 }, NOW + 3600_000, 'x').expiresAt).toBe(parent.jwtExpiresAt);
    expect(code(() => planDelegation(parent, {}, parent.jwtExpiresAt, 'x'))).toBe('EUNAUTHORIZED');
    expect(clampJwtTtl(365 * 86_400_000, NOW, NOW + 5000)).toBe(5000);
    expect(clampJwtTtl(1000, NOW, NOW + 5000)).toBe(1000);
    expect(clampJwtTtl(1000, NOW, undefined)).toBe(1000);
    expect(clampJwtTtl(1000, NOW + 9000, NOW)).toBe(0);
  });

  it('namespaces stay within the parent reach; enforcement only gets stricter', () => {
    expect(planDelegation(parent, { namespace: 'shared', allowedNamespaces: ['team'] }, NOW, 'x')).toMatchObject({ namespace: 'shared', allowedNamespaces: ['team'] });
    expect(code(() => planDelegation(parent, { namespace: 'elsewhere' }, NOW, 'x'))).toBe('EFORBIDDEN');
    expect(code(() => planDelegation(parent, { allowedNamespaces: ['elsewhere'] }, NOW, 'x'))).toBe('EFORBIDDEN');
    expect(planDelegation(parent, { modes: { enforcement: 'enforce' } }, NOW, 'x').modes.enforcement).toBe('enforce');
    expect(code(() => planDelegation(parent, { modes: { enforcement: 'disabled' } }, NOW, 'x'))).toBe('EFORBIDDEN');
    expect(code(() => planDelegation(parent, { modes: { sandbox: 'none' } }, NOW, 'x'))).toBe('EBADREQ');
  });

  it('malformed requests are EBADREQ', () => {
    for (const b of [[], 'x', { limit: 0 }, { limit: 1000 }, { ttl: 'forever' }, { ttl: -1 }, { allowedTools: 'list_peers' }, { surprise: 1 }, { namespace: 'Bad_NS' }]) {
      expect(code(() => planDelegation(parent, b, NOW, 'x'))).toBe('EBADREQ');
    }
  });

  it('buildAgentTree nests children and ignores cycles', () => {
    const all = [
      { agentId: 'a' },
      { agentId: 'b', parentAgentId: 'a' },
      { agentId: 'c', parentAgentId: 'b' },
      { agentId: 'd', parentAgentId: 'a' },
      { agentId: 'x', parentAgentId: 'y' },
      { agentId: 'y', parentAgentId: 'x' },
    ];
    const t = buildAgentTree(all, 'a')!;
    expect(t.children.map((c) => c.agent.agentId)).toEqual(['b', 'd']);
    expect(t.children[0].children[0].agent.agentId).toBe('c');
    expect(buildAgentTree(all, 'x')!.children[0].children).toEqual([]);
    expect(buildAgentTree(all, 'nope')).toBeNull();
  });
});

describe('delegation in ControlPlaneService (in-memory KV)', () => {
  async function setup() {
    const clock = new ManualClock(NOW);
    const svc = await ControlPlaneService.open({ store: new MemoryKvStore(), clock, jwtTtlMs: 2 * 3600_000 });
    const { token } = await svc.createToken({ namespace: 'team', allowedTools: ['list_peers', 'delegate'], allowedNamespaces: ['shared'], ttl: '1h' });
    const p = await svc.enroll({ token, publicKey: randomBytes(32).toString('base64'), name: 'boss' });
    return { clock, svc, p };
  }

  it('child: subset of tools, parentAgentId recorded, JWT never outlives the parent, tree, cascade revocation', async () => {
    const { clock, svc, p } = await setup();
    await expect(svc.delegate(p.jwt, { allowedTools: ['list_peers', 'request_egress'] })).rejects.toMatchObject({ code: 'EFORBIDDEN' });
    clock.advance(3600_000); // the parent has 1 h of JWT left
    const { token } = await svc.delegate(p.jwt, { allowedTools: ['list_peers', 'delegate'], ttl: '30m', limit: 2 });
    const c = await svc.enroll({ token, publicKey: randomBytes(32).toString('base64'), name: 'kid' });
    expect(c.allowedTools).toEqual(['list_peers', 'delegate']);
    expect(c.jwtExpiresAt).toBeLessThanOrEqual(p.jwtExpiresAt);
    const claims = await verifyAgentJwt(svc.jwtSecret, c.jwt, { issuer: svc.issuer, now: clock.now() });
    expect(claims.exp * 1000).toBe(p.jwtExpiresAt);
    // The control plane checks the `delegate` tool itself, whatever channel asks (HTTP, NATS, the agent API).
    await expect(svc.delegate(c.jwt, {})).resolves.toMatchObject({ record: { allowedTools: ['list_peers', 'delegate'] } });
    const g = await svc.enroll({ token: (await svc.delegate(c.jwt, { allowedTools: ['list_peers'] })).token, publicKey: randomBytes(32).toString('base64'), name: 'grandkid' });
    await expect(svc.delegate(g.jwt, {})).rejects.toMatchObject({ code: 'EFORBIDDEN' });
    const agents = await svc.listAgents('team');
    expect(agents.find((a) => a.name === 'kid')!.parentAgentId).toBe(p.agentId);
    const tree = await svc.agentTree('team', 'boss');
    expect(tree.agent.agentId).toBe(p.agentId);
    expect(tree.children.map((n) => n.agent.name)).toEqual(['kid']);
    expect(tree.children[0].children.map((n) => n.agent.agentId)).toEqual([g.agentId]);

    const r = await svc.revokeAgentTree('team', 'boss');
    expect(r.children.map((x) => x.name).sort()).toEqual(['grandkid', 'kid']);
    await expect(svc.verifyJwt(c.jwt)).rejects.toMatchObject({ code: 'EREVOKED' });
    await expect(svc.verifyJwt(g.jwt)).rejects.toMatchObject({ code: 'EREVOKED' });
    expect(await svc.listAgents('team')).toEqual([]);
    // the second use of the child token: its parent is revoked, so it enrolls nothing
    await expect(svc.enroll({ token, publicKey: randomBytes(32).toString('base64'), name: 'late' })).rejects.toMatchObject({ code: 'EREVOKED' });
    expect(await svc.listAgents('team')).toEqual([]);
  });

  it('a revoked or forged parent JWT cannot delegate', async () => {
    const { svc, p } = await setup();
    await expect(svc.delegate('not-a-jwt', {})).rejects.toMatchObject({ code: 'EUNAUTHORIZED' });
    await svc.revokeAgent('team', 'boss');
    await expect(svc.delegate(p.jwt, {})).rejects.toMatchObject({ code: 'EREVOKED' });
  });
});
