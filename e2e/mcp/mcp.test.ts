import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { connect, type NatsConnection } from 'nats';
import { API_BASE } from '../../src/controlplane/index.js';
import { AUDIT_EVENT_VERSION, auditSubject, newEventId } from '../../src/audit/events.js';
import { enroll } from '../../src/enroll/index.js';
import { DirectoryWatcher } from '../../src/enroll/directory.js';
import { REPO } from '../support/env.js';
import { startControlPlane, type ControlPlaneFixture } from '../support/control-plane.js';
import { cliRun, wgKey } from '../controlplane/helpers.js';

/**
 * `lattice-mcp` (the built bin) driven by the MCP SDK's own stdio client, against a real control plane
 * (`lattice control-plane start` on a real nats-server). Writes go through `lattice approvals`.
 */
let dir: string;
let cp: ControlPlaneFixture['cp'];
let closeCp: (() => Promise<void>) | undefined;
let api: string;
let adminToken: string;
/** Admin users: the MCP server runs as a viewer (it proposes), alice approves. */
let mcpToken: string;
let aliceToken: string;
let nc: NatsConnection;
let client: Client;
const agents: Record<string, { agentId: string; ipv4: string; publicKey: string; jwt: string }> = {};

const basePolicy = {
  version: 1,
  egress: [
    { id: 'no-metadata', action: 'deny', cidrs: ['169.254.0.0/16'] },
    { id: 'web', action: 'allow', cidrs: ['203.0.113.0/24'], ports: [443], protocol: 'tcp' },
  ],
};

async function http<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`${api}${path}`, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as T };
}

const lattice = (...args: string[]) => cliRun(['--state-dir', dir, ...args, '--api', api]);

/** Call a tool; returns the parsed JSON of its one text block (and whether it is an error). */
async function tool<T = Record<string, unknown>>(name: string, args: Record<string, unknown> = {}, c = client): Promise<{ isError: boolean; value: T; text: string }> {
  const r = (await c.callTool({ name, arguments: args })) as { isError?: boolean; content: { type: string; text: string }[] };
  const text = r.content[0].text;
  let value: T;
  try {
    value = JSON.parse(text) as T;
  } catch {
    value = undefined as T;
  }
  return { isError: r.isError === true, value, text };
}

async function mcpClient(env: Record<string, string>): Promise<Client> {
  const c = new Client({ name: 'lattice-e2e', version: '0.0.0' });
  await c.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [join(REPO, 'dist/mcp/main.js')],
      env: { PATH: process.env.PATH ?? '', LATTICE_LOG_LEVEL: 'error', ...env },
      stderr: 'pipe',
    }),
  );
  return c;
}

beforeAll(async () => {
  ({ dir, cp, api, close: closeCp } = await startControlPlane('mcp'));
  adminToken = (await readFile(join(dir, 'control-plane', 'admin-token'), 'utf8')).trim();
  const tok = await http<{ token: string }>('POST', `${API_BASE}/enrollment-tokens`, { namespace: 'shop', limit: 2, ttl: '1h' });
  expect(tok.status).toBe(201);
  for (const name of ['payment-service', 'postgres']) {
    const publicKey = wgKey();
    const e = await enroll({ controlPlaneUrl: cp.info.nats, token: tok.body.token, name, publicKey });
    agents[name] = { agentId: e.agentId, ipv4: e.address.ipv4, publicKey, jwt: e.jwt };
  }
  expect((await http('PUT', `${API_BASE}/policies/shop`, basePolicy)).status).toBe(200);
  // A launcher's denied flow, published on the audit stream the way the launcher's publisher does.
  nc = await connect({ servers: cp.info.nats });
  const ev = {
    v: AUDIT_EVENT_VERSION,
    id: newEventId(),
    seq: 1,
    launcherId: 'launcher-e2e',
    agentId: agents['payment-service'].agentId,
    namespace: 'shop',
    ts: new Date().toISOString(),
    type: 'flow.opened',
    flowId: 'f1',
    direction: 'egress',
    verdict: 'denied',
    ruleId: 'default-deny',
    proto: 'tcp',
    srcIp: agents['payment-service'].ipv4,
    srcPort: 40000,
    dstIp: agents.postgres.ipv4,
    dstPort: 5432,
  };
  await nc.jetstream().publish(auditSubject(ev as never), JSON.stringify(ev), { msgID: ev.id });
  const addUser = async (name: string, role: string) => {
    const r = await lattice('admin', 'user', 'add', name, '--role', role);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim();
  };
  mcpToken = await addUser('mcp-e2e', 'viewer');
  aliceToken = await addUser('alice', 'approver');
  client = await mcpClient({ LATTICE_API: api, LATTICE_ADMIN_TOKEN: mcpToken });
}, 120_000);

afterAll(async () => {
  await client?.close();
  await nc?.close();
  await closeCp?.();
});

describe('lattice-mcp over stdio (SDK client) against a real control plane', () => {
  it('lists its tools with input schemas', async () => {
    const { tools } = await client.listTools();
    const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
    for (const n of ['list_agents', 'list_policies', 'get_agent_policy', 'list_tokens', 'list_audit_events', 'list_traces', 'list_egress_requests', 'list_approvals', 'explain_flow', 'propose_set_policy', 'propose_revoke_agent', 'propose_create_token', 'approve_egress_request']) {
      expect(byName[n], n).toBeDefined();
      expect(byName[n].inputSchema.type).toBe('object');
    }
    expect(Object.keys(byName.explain_flow.inputSchema.properties ?? {})).toEqual(expect.arrayContaining(['namespace', 'agent', 'address', 'host', 'port', 'proto']));
    expect(byName.explain_flow.inputSchema.required).toEqual(expect.arrayContaining(['namespace', 'agent']));
    expect(byName.list_agents.annotations?.readOnlyHint).toBe(true);
    expect(byName.propose_set_policy.annotations?.readOnlyHint).toBe(false);
  });

  it('read tools return the agents, tokens without secrets, and the denied flow', async () => {
    const a = await tool<{ agents: { name: string; namespace: string; ipv4: string }[] }>('list_agents', { namespace: 'shop' });
    expect(a.isError, a.text).toBe(false);
    expect(a.value.agents.map((x) => x.name).sort()).toEqual(['payment-service', 'postgres']);

    const t = await tool<{ tokens: Record<string, unknown>[] }>('list_tokens');
    expect(t.value.tokens).toHaveLength(1);
    expect(t.value.tokens[0]).toMatchObject({ namespace: 'shop', uses: 2, limit: 2 });
    expect(Object.keys(t.value.tokens[0])).not.toContain('token');

    const d = await tool<{ events: { verdict: string; dstIp: string; dstPort: number; agentId: string }[] }>('list_audit_events', { namespace: 'shop', verdict: 'denied' });
    expect(d.isError, d.text).toBe(false);
    expect(d.value.events).toEqual([expect.objectContaining({ verdict: 'denied', dstIp: agents.postgres.ipv4, dstPort: 5432, agentId: agents['payment-service'].agentId })]);

    const p = await tool<{ policies: { namespace: string; policy: unknown }[] }>('list_policies');
    expect(p.value.policies).toEqual([expect.objectContaining({ namespace: 'shop', policy: basePolicy })]);
  });

  it('explain names the deciding rule, and for a default deny the minimal rule', async () => {
    const web = await tool('explain_flow', { namespace: 'shop', agent: 'payment-service', address: '203.0.113.7', port: 443 });
    expect(web.value).toMatchObject({ allowed: true, ruleId: 'web', policySource: 'namespace' });
    const meta = await tool('explain_flow', { namespace: 'shop', agent: 'payment-service', address: '169.254.169.254', port: 80 });
    expect(meta.value).toMatchObject({ allowed: false, ruleId: 'no-metadata' });
    const pg = await tool<{ allowed: boolean; ruleId: string; suggestedRule: Record<string, unknown> }>('explain_flow', {
      namespace: 'shop',
      agent: 'payment-service',
      address: agents.postgres.ipv4,
      port: 5432,
      proto: 'tcp',
    });
    expect(pg.value).toMatchObject({ allowed: false, ruleId: 'default-deny' });
    // A peer's address is answered with a rule naming the peer (it covers both of its addresses).
    expect(pg.value.suggestedRule).toMatchObject({ action: 'allow', peers: { name: 'postgres' }, ports: [5432], protocol: 'tcp' });
    const bad = await tool('explain_flow', { namespace: 'shop', agent: 'nobody', address: '10.0.0.1', port: 1 });
    expect(bad.isError).toBe(true);
    expect(bad.text).toMatch(/no agent nobody/);
  });

  it('a write tool only proposes: nothing changes until `lattice approvals approve`, then the policy is live', async () => {
    // The launcher's own directory component (KV watches), as `sandbox start` runs it for payment-service.
    const launcherView = await DirectoryWatcher.forConnection(nc, { namespace: 'shop', name: 'payment-service', publicKey: agents['payment-service'].publicKey }).start();
    onTestFinished(() => launcherView.stop());
    expect(launcherView.policy).toEqual(basePolicy);
    const pg = await tool<{ suggestedRule: { id: string } }>('explain_flow', { namespace: 'shop', agent: 'payment-service', address: agents.postgres.ipv4, port: 5432 });
    const next = { ...basePolicy, egress: [...basePolicy.egress, pg.value.suggestedRule] };
    const prop = await tool<{ pendingId: string; diff: string; status: string }>('propose_set_policy', { namespace: 'shop', policy: next, reason: 'payment-service must reach postgres' });
    expect(prop.isError, prop.text).toBe(false);
    expect(prop.value.status).toBe('pending');
    expect(prop.value.diff).toContain(`+      "id": "${pg.value.suggestedRule.id}"`);
    const id = prop.value.pendingId;

    // Nothing applied yet: the API still serves the old policy, and the flow is still denied.
    expect((await http<{ policy: unknown }>('GET', `${API_BASE}/policies/shop`)).body.policy).toEqual(basePolicy);
    expect((await tool('explain_flow', { namespace: 'shop', agent: 'payment-service', address: agents.postgres.ipv4, port: 5432 })).value).toMatchObject({ allowed: false });

    const ls = await lattice('approvals', 'ls', '--json');
    expect(ls.code, ls.stderr).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([expect.objectContaining({ id, kind: 'set-policy', proposer: 'mcp-e2e', status: 'pending' })]);
    const show = await lattice('approvals', 'show', id);
    expect(show.stdout).toContain(`+      "id": "${pg.value.suggestedRule.id}"`);

    expect(launcherView.policy).toEqual(basePolicy);
    const reachedLauncher = new Promise<void>((resolve) => launcherView.on('policy-changed', (p) => isDeepStrictEqual(p, next) && resolve()));
    // The proposer may not approve its own change (four-eyes), and --by is gone.
    const self = await lattice('approvals', 'approve', id, '--admin-token', mcpToken);
    expect(self.code).not.toBe(0);
    expect(self.stderr).toMatch(/role viewer; .* needs role approver/);
    const by = await lattice('approvals', 'approve', id, '--by', 'alice');
    expect(by.code).not.toBe(0);
    expect(by.stderr).toMatch(/--by is gone/);
    const ok = await lattice('approvals', 'approve', id, '--admin-token', aliceToken);
    expect(ok.code, ok.stderr).toBe(0);
    await reachedLauncher; // bounded by the test's timeout
    expect((await http<{ policy: unknown }>('GET', `${API_BASE}/policies/shop`)).body.policy).toEqual(next);
    expect((await tool('explain_flow', { namespace: 'shop', agent: 'payment-service', address: agents.postgres.ipv4, port: 5432 })).value).toMatchObject({
      allowed: true,
      ruleId: pg.value.suggestedRule.id,
    });

    // Audited: who proposed, who approved.
    const audit = await tool<{ events: { type: string; approvalId: string; by: string; decision?: string }[] }>('list_audit_events', { type: 'approval' });
    expect(audit.value.events.filter((e) => e.approvalId === id).map((e) => [e.type, e.by, e.decision])).toEqual([
      ['approval.proposed', 'mcp-e2e', undefined],
      ['approval.decided', 'alice', 'approved'],
    ]);
  });

  it('a change whose base moved is refused, not applied', async () => {
    const prop = await tool<{ pendingId: string }>('propose_set_policy', { namespace: 'shop', policy: { version: 1, mode: 'audit' } });
    const meanwhile = { version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['203.0.113.0/24'] }] };
    expect((await http('PUT', `${API_BASE}/policies/shop`, meanwhile)).status).toBe(200);
    const r = await lattice('approvals', 'approve', prop.value.pendingId);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/changed since the proposal/);
    expect((await http<{ policy: unknown }>('GET', `${API_BASE}/policies/shop`)).body.policy).toEqual(meanwhile);
    expect((await http<{ status: string }>('GET', `${API_BASE}/approvals/${prop.value.pendingId}`)).body.status).toBe('stale');
  });

  it('revoke and token proposals wait too; a rejected one applies nothing', async () => {
    const rv = await tool<{ pendingId: string }>('propose_revoke_agent', { namespace: 'shop', name: 'postgres' });
    expect(rv.isError, rv.text).toBe(false);
    const tk = await tool<{ pendingId: string }>('propose_create_token', { namespace: 'shop', limit: 1, ttl: '10m' });
    expect(tk.isError, tk.text).toBe(false);
    expect((await tool<{ agents: unknown[] }>('list_agents', { namespace: 'shop' })).value.agents).toHaveLength(2);
    expect((await tool<{ tokens: unknown[] }>('list_tokens')).value.tokens).toHaveLength(1);
    const rej = await lattice('approvals', 'reject', rv.value.pendingId, '--note', 'postgres stays');
    expect(rej.code, rej.stderr).toBe(0);
    expect((await tool<{ agents: unknown[] }>('list_agents', { namespace: 'shop' })).value.agents).toHaveLength(2);
    const ok = await lattice('approvals', 'approve', tk.value.pendingId, '--json');
    expect(ok.code, ok.stderr).toBe(0);
    const secret = (JSON.parse(ok.stdout) as { token: string }).token;
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const tokens = await tool('list_tokens');
    expect(tokens.text).not.toContain(secret);
    expect((tokens.value as { tokens: unknown[] }).tokens).toHaveLength(2);
    const pending = await tool<{ approvals: unknown[] }>('list_approvals');
    expect(pending.value.approvals).toEqual([]);
  });

  it("approve_egress_request proposes one allow rule for an agent's egress request; applied only by `lattice approvals approve`", async () => {
    // The agent asks, over its own channel (NATS request with its JWT), as the agent API's request_egress does.
    const asked = await nc.request('lattice.cp.egress-request', JSON.stringify({ jwt: agents['payment-service'].jwt, host: 'api.stripe.example', port: 443, proto: 'tcp', reason: 'payments' }), { timeout: 10_000 });
    const reqId = (JSON.parse(new TextDecoder().decode(asked.data)) as { id: string }).id;
    expect(reqId).toMatch(/^[0-9a-f-]{36}$/);
    const before = (await http<{ policy: unknown }>('GET', `${API_BASE}/policies/shop`)).body.policy;

    const prop = await tool<{ pendingId: string; diff: string; status: string; summary: string }>('approve_egress_request', { namespace: 'shop', requestId: reqId, reason: 'ok by me' });
    expect(prop.isError, prop.text).toBe(false);
    expect(prop.value.status).toBe('pending');
    expect(prop.value.summary).toContain('api.stripe.example:443');
    expect(prop.value.diff).toContain('+        "api.stripe.example"');
    expect((await http<{ policy: unknown }>('GET', `${API_BASE}/policies/shop`)).body.policy).toEqual(before);
    const pendingReq = await tool<{ requests: { id: string; status: string }[] }>('list_egress_requests', { namespace: 'shop' });
    expect(pendingReq.value.requests.find((r) => r.id === reqId)?.status).toBe('pending');
    // A request that does not exist is a tool error, not a proposal.
    const none = await tool('approve_egress_request', { namespace: 'shop', requestId: '00000000-0000-4000-8000-000000000000' });
    expect(none.isError).toBe(true);
    expect(none.text).toMatch(/no egress request/);

    const ok = await lattice('approvals', 'approve', prop.value.pendingId, '--admin-token', aliceToken);
    expect(ok.code, ok.stderr).toBe(0);
    const after = (await http<{ policy: { egress: { action: string; domains?: string[]; ports?: number[]; protocol?: string }[] } }>('GET', `${API_BASE}/policies/shop`)).body.policy;
    expect(after.egress.at(-1)).toMatchObject({ action: 'allow', domains: ['api.stripe.example'], ports: [443], protocol: 'tcp' });
    const approved = await tool<{ requests: { id: string; status: string; approval?: { id: string } }[] }>('list_egress_requests', { namespace: 'shop' });
    expect(approved.value.requests.find((r) => r.id === reqId)).toMatchObject({ status: 'approved', approval: { id: prop.value.pendingId } });
    // Approving it twice is refused at proposal time.
    const again = await tool('approve_egress_request', { namespace: 'shop', requestId: reqId });
    expect(again.isError).toBe(true);
    expect(again.text).toMatch(/approved, not pending/);
  });

  it('with only LATTICE_STATE_DIR it finds the API the control plane of that state dir wrote (its port is not the default) and its root token', async () => {
    expect(new URL(api).port).not.toBe('8470');
    const c = await mcpClient({ LATTICE_STATE_DIR: dir });
    try {
      const r = await tool('list_agents', { namespace: 'shop' }, c);
      expect(r.isError, r.text).toBeFalsy();
      expect(r.text).toContain('payment-service');
    } finally {
      await c.close();
    }
  });

  it('a wrong admin token gives tool errors, not data', async () => {
    const c = await mcpClient({ LATTICE_API: api, LATTICE_ADMIN_TOKEN: 'wrong' });
    try {
      const r = await tool('list_agents', {}, c);
      expect(r.isError).toBe(true);
      expect(r.text).toMatch(/401/);
    } finally {
      await c.close();
    }
  });
});
