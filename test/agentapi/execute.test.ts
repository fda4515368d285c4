import { describe, expect, it } from 'vitest';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { validateAuditEvent } from '../../src/audit/events.js';
import {
  DenyReason,
  decideToolCall,
  executeTool,
  formatTraceparent,
  parseTraceparent,
  ToolError,
  type AgentIdentity,
  type ExecuteDeps,
} from '../../src/agentapi/execute.js';

const NOW = Date.parse('2025-01-01T00:00:00Z');
const base: AgentIdentity = {
  agentId: '0b6c1f3e-1d2a-4c1e-9a8b-2f0f5a4c3d21',
  name: 'alpha',
  namespace: 'team',
  jwt: 'jwt-secret-do-not-show',
  jwtExpiresAt: NOW + 3600_000,
  allowedTools: ['list_peers', 'get_policy'],
  allowedNamespaces: ['shared'],
  enforcement: 'enforce',
};

describe('decideToolCall', () => {
  const cases: { name: string; id?: Partial<AgentIdentity>; tool?: string; ns?: string; revoked?: boolean; now?: number; want: ReturnType<typeof decideToolCall> }[] = [
    { name: 'allowed tool, own namespace', want: { decision: 'allow', proceed: true } },
    { name: 'allowed tool, allowed namespace', ns: 'shared', want: { decision: 'allow', proceed: true } },
    { name: 'tool not allowed, enforce', tool: 'request_egress', want: { decision: 'deny', proceed: false, reason: DenyReason.Tool } },
    { name: 'tool not allowed, audit', tool: 'request_egress', id: { enforcement: 'audit' }, want: { decision: 'would-deny', proceed: true, reason: DenyReason.Tool } },
    { name: 'tool not allowed, disabled', tool: 'x', id: { enforcement: 'disabled' }, want: { decision: 'would-deny', proceed: true, reason: DenyReason.Tool } },
    { name: 'namespace not allowed, enforce', ns: 'other', want: { decision: 'deny', proceed: false, reason: DenyReason.Namespace } },
    { name: 'namespace not allowed, audit', ns: 'other', id: { enforcement: 'audit' }, want: { decision: 'would-deny', proceed: true, reason: DenyReason.Namespace } },
    { name: 'expired, enforce', now: NOW + 3600_000, want: { decision: 'deny', proceed: false, reason: DenyReason.Expired } },
    { name: 'expired, audit', now: NOW + 3600_001, id: { enforcement: 'audit' }, want: { decision: 'deny', proceed: false, reason: DenyReason.Expired } },
    { name: 'revoked, enforce', revoked: true, want: { decision: 'deny', proceed: false, reason: DenyReason.Revoked } },
    { name: 'revoked, audit', revoked: true, id: { enforcement: 'audit' }, want: { decision: 'deny', proceed: false, reason: DenyReason.Revoked } },
    // delegate hands out authority: without the grant it is refused in every mode (issue 12).
    { name: 'delegate not allowed, audit', tool: 'delegate', id: { enforcement: 'audit' }, want: { decision: 'deny', proceed: false, reason: DenyReason.Tool } },
    { name: 'delegate not allowed, disabled', tool: 'delegate', id: { enforcement: 'disabled' }, want: { decision: 'deny', proceed: false, reason: DenyReason.Tool } },
    { name: 'delegate to a namespace not allowed, audit', tool: 'delegate', ns: 'other', id: { enforcement: 'audit', allowedTools: ['delegate'] }, want: { decision: 'deny', proceed: false, reason: DenyReason.Namespace } },
    { name: 'delegate allowed, audit', tool: 'delegate', id: { enforcement: 'audit', allowedTools: ['delegate'] }, want: { decision: 'allow', proceed: true } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const d = decideToolCall({ ...base, ...c.id }, { tool: c.tool ?? 'list_peers', namespace: c.ns ?? 'team' }, c.now ?? NOW, c.revoked ?? false);
      expect(d).toEqual(c.want);
    });
  }
});

describe('traceparent', () => {
  it('parses a valid header and rejects malformed ones', () => {
    const tid = '4bf92f3577b34da6a3ce929d0e0e4736';
    expect(parseTraceparent(`00-${tid}-00f067aa0ba902b7-01`)).toEqual({ traceId: tid, parentId: '00f067aa0ba902b7' });
    expect(parseTraceparent(`01-${tid}-00f067aa0ba902b7-01-future`)).toEqual({ traceId: tid, parentId: '00f067aa0ba902b7' });
    for (const bad of [undefined, '', 'garbage', `00-${tid}-00f067aa0ba902b7-01-extra`, `ff-${tid}-00f067aa0ba902b7-01`, `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`, `00-${tid}-0000000000000000-01`, `00-${tid.toUpperCase()}-00f067aa0ba902b7-01`]) {
      expect(parseTraceparent(bad)).toBeNull();
    }
    expect(formatTraceparent({ traceId: tid, spanId: 'aaaaaaaaaaaaaaaa' })).toBe(`00-${tid}-aaaaaaaaaaaaaaaa-01`);
  });
});

function harness(id: Partial<AgentIdentity> = {}, opts: { revoked?: boolean; now?: number; failSink?: boolean } = {}) {
  const spans: AuditEventDraft[] = [];
  const ran: string[] = [];
  let t = opts.now ?? NOW;
  const deps: ExecuteDeps = {
    identity: { ...base, ...id },
    isRevoked: () => opts.revoked ?? false,
    now: () => t,
    recordSpan: (d) => {
      if (opts.failSink) throw new Error('outbox full');
      spans.push(d);
    },
    tools: {
      list_peers: async () => {
        ran.push('list_peers');
        t += 7;
        return { peers: [] };
      },
      request_egress: async () => {
        ran.push('request_egress');
        return { requestId: 'r1' };
      },
      get_policy: async () => {
        throw new ToolError(400, 'EBADREQ', 'bad\nthing');
      },
      boom: async () => {
        throw new Error('secret internals');
      },
    },
  };
  return { deps, spans, ran };
}

/** A span as the outbox would stamp it must pass the audit schema (the control plane drops anything else). */
function stamped(d: AuditEventDraft) {
  return validateAuditEvent({ v: 1, id: 'e1', seq: 1, launcherId: 'l1', ts: new Date(NOW).toISOString(), ...d });
}

describe('executeTool', () => {
  it('allowed: runs, 200, span ok/allow with a fresh trace and duration', async () => {
    const h = harness();
    const r = await executeTool(h.deps, { tool: 'list_peers', args: {} });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ result: { peers: [] } });
    expect(h.ran).toEqual(['list_peers']);
    expect(h.spans).toHaveLength(1);
    const s = h.spans[0] as Record<string, unknown>;
    expect(s).toMatchObject({ type: 'tool.span', agentId: base.agentId, namespace: 'team', tool: 'list_peers', status: 'ok', decision: 'allow', durationMs: 7 });
    expect(s.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(s.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(s.parentSpanId).toBeUndefined();
    expect(r.traceparent).toBe(`00-${String(s.traceId)}-${String(s.spanId)}-01`);
    expect(stamped(h.spans[0]).ok).toBe(true);
  });

  it('continues the agent trace from traceparent', async () => {
    const h = harness();
    const tid = '4bf92f3577b34da6a3ce929d0e0e4736';
    await executeTool(h.deps, { tool: 'list_peers', traceparent: `00-${tid}-00f067aa0ba902b7-01` });
    expect(h.spans[0]).toMatchObject({ traceId: tid, parentSpanId: '00f067aa0ba902b7' });
    expect((h.spans[0] as { spanId: string }).spanId).not.toBe('00f067aa0ba902b7');
  });

  it('enforce: a tool outside allowedTools is refused with 403, not run, and recorded as deny', async () => {
    const h = harness();
    const r = await executeTool(h.deps, { tool: 'request_egress', args: { host: 'x', port: 1 } });
    expect(r.status).toBe(403);
    expect(r.body).toMatchObject({ error: { code: 'EDENIED' } });
    expect(h.ran).toEqual([]);
    expect(h.spans[0]).toMatchObject({ tool: 'request_egress', status: 'denied', decision: 'deny', reason: DenyReason.Tool });
    expect(stamped(h.spans[0]).ok).toBe(true);
  });

  it('audit: the same call proceeds and records would-deny', async () => {
    const h = harness({ enforcement: 'audit' });
    const r = await executeTool(h.deps, { tool: 'request_egress', args: {} });
    expect(r.status).toBe(200);
    expect(h.ran).toEqual(['request_egress']);
    expect(h.spans[0]).toMatchObject({ status: 'ok', decision: 'would-deny', reason: DenyReason.Tool });
  });

  it('namespace outside the grants: 403 in enforce, would-deny in audit', async () => {
    const e = harness();
    expect((await executeTool(e.deps, { tool: 'list_peers', args: { namespace: 'other' } })).status).toBe(403);
    expect(e.spans[0]).toMatchObject({ decision: 'deny', reason: DenyReason.Namespace });
    const a = harness({ enforcement: 'audit' });
    expect((await executeTool(a.deps, { tool: 'list_peers', args: { namespace: 'other' } })).status).toBe(200);
    expect(a.spans[0]).toMatchObject({ decision: 'would-deny', reason: DenyReason.Namespace });
  });

  for (const enforcement of ['enforce', 'audit'] as const) {
    it(`${enforcement}: expired and revoked identities are refused`, async () => {
      const x = harness({ enforcement }, { now: base.jwtExpiresAt + 1 });
      expect((await executeTool(x.deps, { tool: 'list_peers' })).status).toBe(403);
      expect(x.spans[0]).toMatchObject({ decision: 'deny', status: 'denied', reason: DenyReason.Expired });
      const r = harness({ enforcement }, { revoked: true });
      expect((await executeTool(r.deps, { tool: 'list_peers' })).status).toBe(403);
      expect(r.spans[0]).toMatchObject({ decision: 'deny', status: 'denied', reason: DenyReason.Revoked });
      expect([...x.ran, ...r.ran]).toEqual([]);
    });
  }

  it('bad bodies, unknown tools and tool failures are answered and still recorded', async () => {
    const h = harness({ enforcement: 'audit', allowedTools: ['list_peers', 'get_policy', 'boom'] });
    const bad = await executeTool(h.deps, { tool: 'list_peers', badBody: { status: 400, message: 'body is not valid JSON' } });
    expect(bad.status).toBe(400);
    expect((await executeTool(h.deps, { tool: 'list_peers', args: [1, 2] })).status).toBe(400);
    expect((await executeTool(h.deps, { tool: 'list_peers', args: { namespace: 5 } })).status).toBe(400);
    const none = await executeTool(h.deps, { tool: 'no such/tool' });
    expect(none.status).toBe(404);
    const failed = await executeTool(h.deps, { tool: 'get_policy' });
    expect(failed.status).toBe(400);
    expect(failed.body).toMatchObject({ error: { code: 'EBADREQ', message: 'bad thing' } });
    const boom = await executeTool(h.deps, { tool: 'boom' });
    expect(boom.status).toBe(500);
    expect(JSON.stringify(boom.body)).not.toContain('secret internals');
    expect(h.ran).toEqual([]);
    expect(h.spans.map((s) => (s as { status: string }).status)).toEqual(['error', 'error', 'error', 'error', 'error', 'error']);
    expect(h.spans[3]).toMatchObject({ tool: 'no_such_tool', decision: 'would-deny' });
    for (const s of h.spans) expect(stamped(s).ok).toBe(true);
  });

  it('a span that cannot be recorded withholds the answer (503)', async () => {
    const h = harness({}, { failSink: true });
    const r = await executeTool(h.deps, { tool: 'list_peers' });
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ error: { code: 'EAUDIT' } });
    expect(JSON.stringify(r.body)).not.toContain('peers');
  });

  it('never reveals the JWT', async () => {
    const h = harness();
    const r = await executeTool(h.deps, { tool: 'request_egress' });
    expect(JSON.stringify([r.body, h.spans])).not.toContain(base.jwt);
  });
});

describe('executeTool: fail closed when the audit cannot record (issue 13, item 10)', () => {
  it('enforce: with the outbox full the tool does not run; 503 EAUDIT; it runs again once the outbox drains', async () => {
    let ready = false;
    const h = harness();
    h.deps.auditReady = () => ready;
    const r = await executeTool(h.deps, { tool: 'list_peers', args: {} });
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ error: { code: 'EAUDIT' } });
    expect(h.ran).toEqual([]);
    ready = true;
    expect((await executeTool(h.deps, { tool: 'list_peers', args: {} })).status).toBe(200);
    expect(h.ran).toEqual(['list_peers']);
  });

  it('audit mode observes and does not block', async () => {
    const h = harness({ enforcement: 'audit' });
    h.deps.auditReady = () => false;
    expect((await executeTool(h.deps, { tool: 'list_peers', args: {} })).status).toBe(200);
    expect(h.ran).toEqual(['list_peers']);
  });
});
