import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { checkPolicyDocument } from '../../src/controlplane/index.js';
import { Approvals, ApprovalConflictError, ApprovalStatus, type ApprovalAuditDraft } from '../../src/controlplane/approvals.js';
import { MemoryKvStore, getJson } from '../../src/controlplane/kv.js';
import { ControlPlaneService } from '../../src/controlplane/service.js';
import { BUCKETS, type NamespacePolicyRecord } from '../../src/controlplane/types.js';
import { EGRESS_BUCKET, EgressRequests } from '../../src/controlplane/egress.js';
import type { AgentClaims } from '../../src/controlplane/jwt.js';

const key = () => randomBytes(32).toString('base64');
const allowWeb = { version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['203.0.113.0/24'], ports: [443], protocol: 'tcp' }] };

async function setup() {
  const clock = new ManualClock();
  const store = new MemoryKvStore();
  const svc = await ControlPlaneService.open({ store, clock, validatePolicy: checkPolicyDocument });
  const audit: ApprovalAuditDraft[] = [];
  const approvals = new Approvals({
    bucket: await store.bucket('lattice_approvals'),
    policies: await store.bucket(BUCKETS.policies),
    agents: await store.bucket(BUCKETS.agents),
    egress: await store.bucket(EGRESS_BUCKET),
    targets: svc,
    validatePolicy: checkPolicyDocument,
    clock,
    audit: (e) => void audit.push(e),
  });
  const policies = await store.bucket(BUCKETS.policies);
  const egress = await EgressRequests.open(store, clock);
  return { clock, svc, approvals, audit, policies, egress };
}

describe('Approvals', () => {
  it('a proposed policy changes nothing until approved; then it is live, and both steps are audited', async () => {
    const { svc, approvals, audit } = await setup();
    await svc.setPolicy('team', { version: 1 });
    const p = await approvals.propose({ kind: 'set-policy', namespace: 'team', policy: allowWeb, proposer: 'mcp', reason: 'needs the web' });
    expect(p.status).toBe(ApprovalStatus.Pending);
    expect(p.diff).toContain('+  "egress": [');
    expect(p.diff).toContain('-  "version": 1');
    expect((await svc.getPolicy('team'))?.policy).toEqual({ version: 1 });
    expect((await approvals.list('pending')).map((a) => a.id)).toEqual([p.id]);

    const done = await approvals.approve(p.id, { by: 'alice' });
    expect(done.approval).toMatchObject({ status: 'approved', decidedBy: 'alice' });
    expect((await svc.getPolicy('team'))?.policy).toEqual(allowWeb);
    expect(audit.map((e) => [e.type, e.by, 'decision' in e ? e.decision : undefined])).toEqual([
      ['approval.proposed', 'mcp', undefined],
      ['approval.decided', 'alice', 'approved'],
    ]);
    // Decided once: a second approve or a reject is refused.
    await expect(approvals.approve(p.id, {})).rejects.toMatchObject({ code: 'EAPPROVAL_NOT_PENDING' });
    await expect(approvals.reject(p.id, {})).rejects.toBeInstanceOf(ApprovalConflictError);
  });

  it('refuses to apply a policy whose base moved, and records it as stale', async () => {
    const { svc, approvals, audit } = await setup();
    const p = await approvals.propose({ kind: 'set-policy', namespace: 'team', policy: allowWeb, proposer: 'mcp' });
    expect(p.base.revision).toBe(0);
    await svc.setPolicy('team', { version: 1, mode: 'audit' }); // someone else changed it meanwhile
    await expect(approvals.approve(p.id, { by: 'alice' })).rejects.toMatchObject({ code: 'EAPPROVAL_STALE' });
    expect((await svc.getPolicy('team'))?.policy).toEqual({ version: 1, mode: 'audit' });
    expect((await approvals.get(p.id)).status).toBe('stale');
    expect(audit.at(-1)).toMatchObject({ type: 'approval.decided', decision: 'stale' });
  });

  it('rejects an invalid policy at proposal time with the validator\'s message and stores nothing', async () => {
    const { approvals, audit } = await setup();
    await expect(approvals.propose({ kind: 'set-policy', namespace: 'team', policy: { version: 2 }, proposer: 'mcp' })).rejects.toThrow(/invalid policy/);
    expect(await approvals.list()).toEqual([]);
    expect(audit).toEqual([]);
  });

  it('revoke-agent applies only to the enrollment the proposer saw', async () => {
    const { svc, approvals } = await setup();
    const { token } = await svc.createToken({ namespace: 'team', limit: 3, ttl: '1h' });
    await svc.enroll({ token, publicKey: key(), name: 'alpha' });
    const p = await approvals.propose({ kind: 'revoke-agent', namespace: 'team', name: 'alpha', proposer: 'mcp' });
    expect(p.diff).toMatch(/^-\{/);
    expect((await svc.listAgents('team')).map((a) => a.name)).toEqual(['alpha']);
    const r = await approvals.approve(p.id, {});
    expect(r.approval.result).toEqual({ revoked: ['team/alpha'] });
    expect(await svc.listAgents('team')).toEqual([]);

    // Proposed against one enrollment, the name re-enrolled since: stale.
    await svc.enroll({ token, publicKey: key(), name: 'beta' });
    const q = await approvals.propose({ kind: 'revoke-agent', namespace: 'team', name: 'beta', proposer: 'mcp' });
    await svc.revokeAgentTree('team', 'beta');
    await svc.enroll({ token, publicKey: key(), name: 'beta' });
    await expect(approvals.approve(q.id, {})).rejects.toMatchObject({ code: 'EAPPROVAL_STALE' });
    expect((await svc.listAgents('team')).map((a) => a.name)).toEqual(['beta']);
  });

  it('create-token returns the secret to the approver only; reject applies nothing', async () => {
    const { approvals } = await setup();
    const p = await approvals.propose({ kind: 'create-token', namespace: 'team', token: { namespace: 'team', limit: 2, ttl: '1h' }, proposer: 'mcp' });
    const r = await approvals.approve(p.id, {});
    expect(r.token).toMatch(/\S{20,}/);
    expect(JSON.stringify(await approvals.get(p.id))).not.toContain(r.token!);

    const q = await approvals.propose({ kind: 'create-token', namespace: 'team', token: { namespace: 'team' }, proposer: 'mcp' });
    const rej = await approvals.reject(q.id, { by: 'bob', note: 'not now' });
    expect(rej).toMatchObject({ status: 'rejected', decidedBy: 'bob', note: 'not now' });
  });

  it('bad input changes nothing', async () => {
    const { approvals, policies } = await setup();
    for (const body of [
      null,
      { kind: 'set-policy', namespace: 'Bad NS', policy: allowWeb, proposer: 'mcp' },
      { kind: 'set-policy', namespace: 'team', policy: allowWeb },
      { kind: 'drop-tables', namespace: 'team', proposer: 'mcp' },
      { kind: 'revoke-agent', namespace: 'team', name: 'ghost', proposer: 'mcp' },
      { kind: 'create-token', token: { namespace: 'team', limit: -1 }, proposer: 'mcp' },
    ]) {
      await expect(approvals.propose(body), JSON.stringify(body)).rejects.toThrow();
    }
    expect(await approvals.list()).toEqual([]);
    expect(await getJson<NamespacePolicyRecord>(policies, 'team')).toBeNull();
    await expect(approvals.approve('not-a-uuid', {})).rejects.toThrow(/UUID/);
  });
});

describe('approve-egress', () => {
  const claims = { sub: 'agent-1', ns: 'team', name: 'web' } as AgentClaims;

  it('proposes one allow rule for exactly the request; applied on approval, which marks the request approved', async () => {
    const { svc, approvals, egress } = await setup();
    await svc.setPolicy('team', allowWeb);
    const req = await egress.create(claims, { host: '198.51.100.7', port: 5432, proto: 'tcp' });
    const p = await approvals.propose({ kind: 'approve-egress', namespace: 'team', requestId: req.id, proposer: 'mcp' });
    expect(p).toMatchObject({ kind: 'approve-egress', status: 'pending', name: 'web' });
    expect(p.diff).toContain('"198.51.100.7/32"');
    expect((await svc.getPolicy('team'))?.policy).toEqual(allowWeb);
    await approvals.approve(p.id, { by: 'alice' });
    const live = (await svc.getPolicy('team'))?.policy as { egress: unknown[] };
    expect(live.egress).toEqual([...allowWeb.egress, { id: 'allow-198-51-100-7-tcp-5432', action: 'allow', cidrs: ['198.51.100.7/32'], ports: [5432], protocol: 'tcp' }]);
    expect((await egress.list('team'))[0]).toMatchObject({ status: 'approved', approval: { id: p.id, ruleId: 'allow-198-51-100-7-tcp-5432' } });
    await expect(approvals.propose({ kind: 'approve-egress', namespace: 'team', requestId: req.id, proposer: 'mcp' })).rejects.toThrow(/approved, not pending/);
  });

  it('is refused as stale when the policy moved, and the request stays pending', async () => {
    const { svc, approvals, egress } = await setup();
    const req = await egress.create(claims, { host: 'api.example.com', port: 443 });
    const p = await approvals.propose({ kind: 'approve-egress', namespace: 'team', requestId: req.id, proposer: 'mcp' });
    await svc.setPolicy('team', allowWeb);
    await expect(approvals.approve(p.id, {})).rejects.toMatchObject({ code: 'EAPPROVAL_STALE' });
    expect((await svc.getPolicy('team'))?.policy).toEqual(allowWeb);
    expect((await egress.list('team'))[0].status).toBe('pending');
  });

  it('refuses an unknown request and a malformed id', async () => {
    const { approvals } = await setup();
    await expect(approvals.propose({ kind: 'approve-egress', namespace: 'team', requestId: '00000000-0000-4000-8000-000000000000', proposer: 'mcp' })).rejects.toThrow(/no egress request/);
    await expect(approvals.propose({ kind: 'approve-egress', namespace: 'team', requestId: 'x', proposer: 'mcp' })).rejects.toThrow(/UUID/);
  });
});
