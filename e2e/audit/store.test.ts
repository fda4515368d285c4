import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { connect, type NatsConnection } from 'nats';
import { startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { Outbox } from '../../src/audit/outbox.js';
import { OutboxPublisher } from '../../src/audit/publisher.js';
import { AuditStore, mountAuditRoutes, type SpanNode } from '../../src/audit/store.js';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { HttpApi } from '../../src/controlplane/http.js';

const quiet = pino({ level: 'silent' });
const run = promisify(execFile);
const NS = 'ltaudit';
const PARENT = 'ltaudit-parent';
const CHILD = 'ltaudit-child';
const span = (agentId: string, traceId: string, spanId: string, tool: string, parentSpanId?: string, decision: 'allow' | 'would-deny' = 'allow'): AuditEventDraft => ({
  type: 'tool.span', agentId, namespace: NS, traceId, spanId, parentSpanId, tool, status: 'ok', decision, durationMs: 2,
});
const flow = (agentId: string, i: number): AuditEventDraft => ({
  type: 'flow.opened', agentId, namespace: NS, flowId: `f${i}`, proto: 'tcp', srcIp: '10.77.0.2', srcPort: 40000 + i,
  dstIp: '10.77.0.1', dstPort: 443, direction: 'egress', verdict: 'allowed',
});

let root: string;
let nats: StartedNatsServer;
let nc: NatsConnection;
let ob: Outbox;
let pub: OutboxPublisher;
let store: AuditStore;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ltaudit-store-'));
  nats = await startNatsServer({ storeDir: join(root, 'js') });
  ob = await Outbox.open({ dir: join(root, 'outbox'), logger: quiet });
  pub = new OutboxPublisher({ outbox: ob, servers: nats.url, logger: quiet });
  pub.start();
  // Trace T1 crosses a delegation: the parent's delegate span is the child's spans' parent.
  for (const d of [
    span(PARENT, 'T1', 's1', 'delegate'),
    span(PARENT, 'T1', 's2', 'list_peers', 's1'),
    span(CHILD, 'T1', 's3', 'get_policy', 's1'),
    span(CHILD, 'T1', 's4', 'request_egress', 's3', 'would-deny'),
    span('ltaudit-other', 'T2', 'x1', 'list_peers'),
    flow(PARENT, 1), flow(PARENT, 2), flow(CHILD, 3),
    { type: 'sandbox.started', sandboxId: 'sb1', agentId: PARENT, namespace: NS } as AuditEventDraft,
  ]) await ob.append(d);
  expect(await pub.drained(60_000)).toBe(true);
  nc = await connect({ servers: nats.url });
  // Hostile input straight into the stream: garbage, and a valid event under another agent's subject.
  const js = nc.jetstream();
  await js.publish(`lattice.audit.${NS}.${PARENT}.flow.opened`, new TextEncoder().encode('{not json'));
  const forged = { v: 1, id: 'forged-1', seq: 1, launcherId: 'evil', ts: new Date().toISOString(), ...flow(CHILD, 9) };
  await js.publish(`lattice.audit.${NS}.${PARENT}.flow.opened`, new TextEncoder().encode(JSON.stringify(forged)));
  store = await AuditStore.create({ nc, logger: quiet });
});

afterAll(async () => {
  await pub?.stop();
  await ob?.close();
  await nc?.close();
  await nats?.stop();
  await rm(root, { recursive: true, force: true });
});

const shape = (n: SpanNode): unknown => ({ [n.span.spanId]: n.children.map(shape) });

describe('audit store (queries the stream)', () => {
  it('returns a trace as its call tree, across parent and delegated child agents', async () => {
    const r = await store.traces({ traceId: 'T1' });
    expect(r.traces).toHaveLength(1);
    const t = r.traces[0];
    expect(t.roots.map(shape)).toEqual([{ s1: [{ s2: [] }, { s3: [{ s4: [] }] }] }]);
    expect(t.agents.sort()).toEqual([CHILD, PARENT]);
    expect(t.spanCount).toBe(4);
    expect(t.violations).toBe(1);
    expect(t.roots[0].children[1].children[0].span).toMatchObject({ tool: 'request_egress', decision: 'would-deny', agentId: CHILD });
  });

  it('finds whole traces by an agent that took part in them', async () => {
    const byChild = await store.traces({ agentId: CHILD });
    expect(byChild.traces.map((t) => t.traceId)).toEqual(['T1']);
    expect(byChild.traces[0].spanCount).toBe(4);
    const all = await store.traces({});
    expect(all.traces.map((t) => t.traceId).sort()).toEqual(['T1', 'T2']);
  });

  it('answers events by agent, type or family, since and after; drops and counts invalid ones', async () => {
    const flows = await store.events({ agentId: PARENT, type: 'flow' });
    expect(flows.events.map((e) => e.type === 'flow.opened' && e.flowId)).toEqual(['f1', 'f2']);
    expect(flows.dropped).toBe(2); // the garbage and the forged event on the parent's subject
    const opened = await store.events({ type: 'flow.opened' });
    expect(opened.events).toHaveLength(3);
    const lifecycle = await store.events({ type: 'sandbox' });
    expect(lifecycle.events.map((e) => e.type)).toEqual(['sandbox.started']);
    expect((await store.events({ since: new Date(Date.now() + 60_000) })).events).toEqual([]);
    const everything = await store.events({});
    expect(everything.events).toHaveLength(9);
    const limited = await store.events({ limit: 2 });
    expect(limited.events).toHaveLength(2);
    expect(limited.truncated).toBe(true);

    await ob.append(flow(CHILD, 4));
    expect(await pub.drained(60_000)).toBe(true);
    const newer = await store.events({ after: everything.cursor });
    expect(newer.events.map((e) => e.type === 'flow.opened' && e.flowId)).toEqual(['f4']);
  });

  it('serves GET .../audit/traces and .../audit/events through the control plane route table, and the CLI reads them', async () => {
    const api = new HttpApi({ adminToken: 'ltaudit-token' });
    mountAuditRoutes(api, store);
    // The CLI shows agents by name and takes names for --agent: the control plane's agent list, as it serves it.
    api.route('GET', '/api/v1/agent-isolation/agents', () => ({
      agents: [{ agentId: PARENT, name: 'parent', namespace: NS }, { agentId: CHILD, name: 'child', namespace: NS }],
    }));
    const { url } = await api.listen('127.0.0.1', 0);
    try {
      const auth = { authorization: 'Bearer ltaudit-token' };
      const tr = await fetch(`${url}/api/v1/agent-isolation/audit/traces?traceId=T1`, { headers: auth });
      expect(tr.status).toBe(200);
      const body = (await tr.json()) as { traces: Array<{ roots: SpanNode[] }> };
      expect(body.traces[0].roots.map(shape)).toEqual([{ s1: [{ s2: [] }, { s3: [{ s4: [] }] }] }]);
      const ev = await fetch(`${url}/api/v1/agent-isolation/audit/events?agentId=${CHILD}&type=flow&since=1h`, { headers: auth });
      expect(((await ev.json()) as { events: unknown[] }).events).toHaveLength(2);
      expect((await fetch(`${url}/api/v1/agent-isolation/audit/events`)).status).toBe(401);
      expect((await fetch(`${url}/api/v1/agent-isolation/audit/events?agentId=a.b`, { headers: auth })).status).toBe(400);
      expect((await fetch(`${url}/api/v1/agent-isolation/audit/events?since=soon`, { headers: auth })).status).toBe(400);

      const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
      const cli = (args: string[]) => run(process.execPath, ['--import', 'tsx', main, '--state-dir', root, 'audit', ...args, '--api', url, '--admin-token', 'ltaudit-token']);
      const json = JSON.parse((await cli(['traces', '--trace', 'T1', '--json'])).stdout) as { traces: Array<{ roots: SpanNode[] }> };
      expect(json.traces[0].roots.map(shape)).toEqual([{ s1: [{ s2: [] }, { s3: [{ s4: [] }] }] }]);
      const human = (await cli(['traces', '--agent', 'child'])).stdout;
      expect(human).toContain('trace T1');
      expect(human).toMatch(/└─ request_egress\s+ltaudit\/ltaudit-child\s+ok would-deny/);
      const events = (await cli(['events', '--type', 'flow', '--agent', `${NS}/parent`])).stdout.trim().split('\n');
      expect(events).toHaveLength(2);
      expect(events[0]).toContain('tcp 10.77.0.2:40001 -> 10.77.0.1:443 egress allowed');
      await expect(cli(['events', '--since', 'whenever'])).rejects.toMatchObject({ code: 2 });
    } finally {
      await api.close();
    }
  });
});
