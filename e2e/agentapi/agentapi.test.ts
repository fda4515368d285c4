import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgentApi, type AgentIdentity, type StartedAgentApi } from '../../src/agentapi/index.js';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { API_BASE, startControlPlane, type EnrollResponse, type StartedControlPlane } from '../../src/controlplane/index.js';
import { DirectoryWatcher, enroll } from '../../src/enroll/index.js';
import { startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { callSocket, keyPair, tempDir } from './helpers.js';
import { waitFor } from '../support/env.js';

const NS = 'ltaa';
const POLICY = { version: 1, mode: 'enforce', egress: [], ingress: [] };

let work: Awaited<ReturnType<typeof tempDir>>;
let nats: StartedNatsServer;
let cp: StartedControlPlane;
let nc: NatsConnection;
const watchers: DirectoryWatcher[] = [];
const apis: StartedAgentApi[] = [];

beforeAll(async () => {
  work = await tempDir('cp');
  nats = await startNatsServer({ storeDir: join(work.path, 'nats'), port: 0 });
  cp = await startControlPlane({ stateDir: join(work.path, 'state'), natsUrl: nats.url, http: { host: '127.0.0.1', port: 0 } });
  nc = await connect({ servers: nats.url });
});
afterAll(async () => {
  for (const a of apis) await a.close();
  for (const w of watchers) w.stop();
  await nc?.close();
  await cp?.stop();
  await nats?.stop();
  await work?.remove();
});

async function admin(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${cp.httpUrl}${API_BASE}${path}`, { method, headers: { authorization: `Bearer ${cp.adminToken}` }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

async function token(body: Record<string, unknown>): Promise<string> {
  const r = await admin('POST', '/enrollment-tokens', body);
  expect(r.status).toBe(201);
  return r.json.token as string;
}

/** What `sandbox start` does: enroll, watch the directory, serve the agent API on a socket in the state dir. */
async function launch(name: string, tok: string) {
  const kp = keyPair();
  const e: EnrollResponse = await enroll({ nc, token: tok, name, publicKey: kp.publicKey });
  const watcher = await DirectoryWatcher.forConnection(nc, { namespace: e.namespace, name, publicKey: kp.publicKey, allowedNamespaces: e.allowedNamespaces }).start();
  watchers.push(watcher);
  const spans: AuditEventDraft[] = [];
  const identity: AgentIdentity = {
    agentId: e.agentId, name, namespace: e.namespace, jwt: e.jwt, jwtExpiresAt: e.jwtExpiresAt,
    allowedTools: e.allowedTools, allowedNamespaces: e.allowedNamespaces, enforcement: e.modes.enforcement,
  };
  const socketPath = join(work.path, 'sandboxes', name, 'agentapi', 'agent.sock');
  const api = await startAgentApi({
    socketPath,
    identity,
    nc,
    isRevoked: () => watcher.revoked !== undefined,
    checkEgress: (ip, port) => (ip === '10.77.0.2' && port === 443 ? { verdict: 'allowed', ruleId: 'peers-https' } : { verdict: 'denied' }),
    getPolicy: () => watcher.policy ?? e.policy,
    recordSpan: (d) => {
      spans.push(d);
    },
  });
  apis.push(api);
  const call = (method: string, path: string, body?: unknown, headers?: Record<string, string>) =>
    callSocket(socketPath, method, path, body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body), headers);
  return { e, kp, watcher, spans, socketPath, call, api };
}

describe('agent API over a Unix socket (real nats-server + control plane)', () => {
  let boss: Awaited<ReturnType<typeof launch>>;
  let peer: Awaited<ReturnType<typeof launch>>;

  beforeAll(async () => {
    const t = await token({ namespace: NS, allowedTools: ['list_peers', 'get_policy', 'check_connectivity', 'delegate'], limit: 2, policy: POLICY, modes: { enforcement: 'enforce' } });
    boss = await launch('boss', t);
    peer = await launch('peer', t);
  });

  it('identity comes from the channel and never includes the JWT', async () => {
    const r = await boss.call('GET', '/v1/identity');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ agentId: boss.e.agentId, namespace: NS, name: 'boss', enforcement: 'enforce', revoked: false, expired: false });
    expect(r.text).not.toContain(boss.e.jwt);
    // What exists and what this identity may call are told apart (one list named `tools` read as a grant).
    expect(r.json.availableTools).toEqual(['list_peers', 'check_connectivity', 'get_policy', 'request_egress', 'delegate']);
    expect(r.json).not.toHaveProperty('tools');
    expect(r.json).toHaveProperty('allowedTools');
    // a claimed identity in the request changes nothing
    const r2 = await boss.call('GET', '/v1/identity', undefined, { authorization: `Bearer ${peer.e.jwt}`, 'x-agent-id': peer.e.agentId });
    expect(r2.json.agentId).toBe(boss.e.agentId);
  });

  it('allowed tools run (list_peers over NATS, check_connectivity, get_policy) and each records an allow span', async () => {
    const before = boss.spans.length;
    const peers = await boss.call('POST', '/v1/tools/list_peers', {});
    expect(peers.status).toBe(200);
    expect((peers.json.result as { peers: { name: string }[] }).peers.map((p) => p.name)).toEqual(['peer']);
    const cc = await boss.call('POST', '/v1/tools/check_connectivity', { ip: '10.77.0.2', port: 443, proto: 'tcp' });
    expect(cc.status).toBe(200);
    expect(cc.json.result).toMatchObject({ verdict: 'allowed', ruleId: 'peers-https' });
    const pol = await boss.call('POST', '/v1/tools/get_policy');
    expect(pol.status).toBe(200);
    expect(pol.json.result).toEqual({ policy: POLICY });
    const spans = boss.spans.slice(before);
    expect(spans.map((s) => [(s as { tool: string }).tool, (s as { decision: string }).decision, (s as { status: string }).status])).toEqual([
      ['list_peers', 'allow', 'ok'],
      ['check_connectivity', 'allow', 'ok'],
      ['get_policy', 'allow', 'ok'],
    ]);
  });

  it('enforce: a tool outside allowedTools is 403 and recorded as deny; a namespace outside the grants too', async () => {
    const r = await boss.call('POST', '/v1/tools/request_egress', { host: 'example.org', port: 443 });
    expect(r.status).toBe(403);
    expect(boss.spans.at(-1)).toMatchObject({ type: 'tool.span', tool: 'request_egress', decision: 'deny', status: 'denied', agentId: boss.e.agentId, namespace: NS });
    const n = await boss.call('POST', '/v1/tools/list_peers', { namespace: 'someone-else' });
    expect(n.status).toBe(403);
    expect(boss.spans.at(-1)).toMatchObject({ tool: 'list_peers', decision: 'deny', reason: 'namespace not allowed' });
  });

  it('continues the agent trace and returns its own traceparent', async () => {
    const tid = 'aa'.repeat(16);
    const r = await boss.call('POST', '/v1/tools/get_policy', {}, { traceparent: `00-${tid}-${'bb'.repeat(8)}-01` });
    const s = boss.spans.at(-1) as { traceId: string; spanId: string; parentSpanId?: string };
    expect(s).toMatchObject({ traceId: tid, parentSpanId: 'bb'.repeat(8) });
    expect(r.headers.traceparent).toBe(`00-${tid}-${s.spanId}-01`);
    const fresh = await boss.call('POST', '/v1/tools/get_policy', {}, { traceparent: 'junk' });
    expect(fresh.status).toBe(200);
    expect((boss.spans.at(-1) as { traceId: string; parentSpanId?: string }).parentSpanId).toBeUndefined();
  });

  it('bad JSON is 400, an oversized body 413, unknown routes 404, wrong methods 405: one-line errors', async () => {
    const bad = await boss.call('POST', '/v1/tools/list_peers', '{not json');
    expect(bad.status).toBe(400);
    expect((bad.json.error as { message: string }).message).toMatch(/^body is not valid JSON/);
    expect(bad.text.includes('\n')).toBe(false);
    const big = await boss.call('POST', '/v1/tools/list_peers', Buffer.alloc(70 * 1024, 0x20));
    expect(big.status).toBe(413);
    expect((await boss.call('GET', '/v1/nothing')).status).toBe(404);
    expect((await boss.call('GET', '/v1/tools/list_peers')).status).toBe(405);
    expect((await boss.call('POST', '/v1/identity')).status).toBe(405);
  });

  it('audit mode: a disallowed tool proceeds with a would-deny span; request_egress is stored for the operator', async () => {
    const t = await token({ namespace: NS, allowedTools: ['list_peers'], modes: { enforcement: 'audit' } });
    const aud = await launch('auditee', t);
    const r = await aud.call('POST', '/v1/tools/request_egress', { host: 'api.example.org', port: 443, reason: 'fetch docs' });
    expect(r.status).toBe(200);
    const requestId = (r.json.result as { requestId: string }).requestId;
    expect(aud.spans.at(-1)).toMatchObject({ tool: 'request_egress', decision: 'would-deny', status: 'ok', reason: 'tool not allowed' });
    const list = await admin('GET', `/egress-requests?namespace=${NS}`);
    expect(list.status).toBe(200);
    expect(list.json.requests).toEqual([expect.objectContaining({ id: requestId, agentId: aud.e.agentId, name: 'auditee', host: 'api.example.org', port: 443, proto: 'tcp', status: 'pending', reason: 'fetch docs' })]);
    const badReq = await aud.call('POST', '/v1/tools/request_egress', { host: 'bad host!', port: 443 });
    expect(badReq.status).toBe(400);
    expect(aud.spans.at(-1)).toMatchObject({ status: 'error', decision: 'would-deny' });
  });

  it('delegation: subset only, child enrolls with its own key, tree is queryable, revoking the parent revokes the child', async () => {
    const sup = await boss.call('POST', '/v1/delegate', { allowedTools: ['list_peers', 'request_egress'] });
    expect(sup.status).toBe(403);
    expect((sup.json.error as { code: string }).code).toBe('EFORBIDDEN');
    expect(boss.spans.at(-1)).toMatchObject({ tool: 'delegate', decision: 'allow', status: 'error' });

    const d = await boss.call('POST', '/v1/delegate', { allowedTools: ['list_peers'], ttl: '400d' });
    expect(d.status).toBe(200);
    const dr = d.json.result as { token: string; parentAgentId: string; allowedTools: string[]; expiresAt: string; notAfter: string };
    expect(dr).toMatchObject({ parentAgentId: boss.e.agentId, allowedTools: ['list_peers'] });
    expect(Date.parse(dr.expiresAt)).toBeLessThanOrEqual(boss.e.jwtExpiresAt);
    expect(boss.spans.at(-1)).toMatchObject({ tool: 'delegate', decision: 'allow', status: 'ok' });

    // Delegation over HTTP with the parent's JWT works the same; without a JWT it does not.
    const h = await fetch(`${cp.httpUrl}${API_BASE}/delegate`, { method: 'POST', headers: { authorization: `Bearer ${boss.e.jwt}` }, body: JSON.stringify({ allowedTools: ['get_policy'] }) });
    expect(h.status).toBe(201);
    // A tool the parent lacks is forbidden; a name that is no tool at all is a bad request naming the tools.
    const hs = await fetch(`${cp.httpUrl}${API_BASE}/delegate`, { method: 'POST', headers: { authorization: `Bearer ${boss.e.jwt}` }, body: JSON.stringify({ allowedTools: ['request_egress'] }) });
    expect(hs.status).toBe(403);
    const none = await fetch(`${cp.httpUrl}${API_BASE}/delegate`, { method: 'POST', headers: { authorization: `Bearer ${boss.e.jwt}` }, body: JSON.stringify({ allowedTools: ['shell'] }) });
    expect(none.status).toBe(400);
    expect(((await none.json()) as { error: { message: string } }).error.message).toMatch(/no tool "shell"; the agent API's tools are list_peers, /);
    expect((await fetch(`${cp.httpUrl}${API_BASE}/delegate`, { method: 'POST', body: '{}' })).status).toBe(401);
    expect((await fetch(`${cp.httpUrl}${API_BASE}/delegate`, { method: 'POST', headers: { authorization: `Bearer ${cp.adminToken}` }, body: '{}' })).status).toBe(401);

    const kid = await launch('kid', dr.token);
    expect(kid.e.allowedTools).toEqual(['list_peers']);
    expect(kid.e.jwtExpiresAt).toBeLessThanOrEqual(boss.e.jwtExpiresAt);
    expect(kid.kp.publicKey).not.toBe(boss.kp.publicKey);
    // The child continues the parent's trace: one tree across agents (traceId shared, parent span = the delegate call).
    const kidPeers = await kid.call('POST', '/v1/tools/list_peers', undefined, { traceparent: String(d.headers.traceparent) });
    expect(kidPeers.status).toBe(200);
    const delegateSpan = boss.spans.at(-1) as { traceId: string; spanId: string };
    expect(kid.spans.at(-1)).toMatchObject({ agentId: kid.e.agentId, traceId: delegateSpan.traceId, parentSpanId: delegateSpan.spanId });
    expect((await kid.call('POST', '/v1/delegate', {})).status).toBe(403); // the child was not given `delegate`

    const tree = await admin('GET', `/agents/boss/tree?namespace=${NS}`);
    expect(tree.status).toBe(200);
    const t = tree.json as { agent: { agentId: string }; children: { agent: { name: string; parentAgentId: string } }[] };
    expect(t.agent.agentId).toBe(boss.e.agentId);
    expect(t.children.map((c) => c.agent)).toEqual([expect.objectContaining({ name: 'kid', parentAgentId: boss.e.agentId })]);
    const listed = await admin('GET', `/agents?namespace=${NS}`);
    expect((listed.json.agents as { name: string; parentAgentId?: string }[]).find((a) => a.name === 'kid')?.parentAgentId).toBe(boss.e.agentId);

    const kidRevoked = new Promise((resolve) => kid.watcher.once('revoked', resolve));
    const rv = await admin('DELETE', `/agents/boss?namespace=${NS}`);
    expect(rv.status).toBe(200);
    expect((rv.json.children as { name: string }[]).map((c) => c.name)).toEqual(['kid']);
    await kidRevoked;
    expect(kid.watcher.revoked).toMatchObject({ name: 'kid', agentId: kid.e.agentId });
    await expect(cp.service.verifyJwt(kid.e.jwt)).rejects.toMatchObject({ code: 'EREVOKED' });
    const after = await admin('GET', `/agents?namespace=${NS}`);
    expect((after.json.agents as { name: string }[]).map((a) => a.name).sort()).toEqual(['auditee', 'peer']);

    // Both agent APIs now refuse everything, in enforce mode and beyond.
    await waitFor(() => boss.watcher.revoked !== undefined, 60_000, 'boss revoked');
    const r1 = await kid.call('POST', '/v1/tools/list_peers');
    expect(r1.status).toBe(403);
    expect(kid.spans.at(-1)).toMatchObject({ decision: 'deny', reason: 'identity revoked' });
    expect((await boss.call('POST', '/v1/tools/get_policy')).status).toBe(403);
    expect((await boss.call('GET', '/v1/identity')).json.revoked).toBe(true);
  });
});
