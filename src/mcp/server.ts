import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { API_BASE } from '../controlplane/api.js';
import type { AdminApiClient } from './apiclient.js';

/**
 * `lattice mcp`: a Model Context Protocol server (spec 2025-06-18, via @modelcontextprotocol/sdk) for
 * assistants that operate the overlay. It holds the admin token, talks only to the admin HTTP API, and
 * never applies a change: read tools answer from the API; write tools (propose_*) create a pending
 * change (POST .../approvals) and return its id and diff, which a human approves with
 * `lattice approvals approve ID`. Token secrets never pass through it (token records only; a token
 * created by an approved proposal is shown to the approver, not to the assistant).
 *
 * Every tool returns one text block holding JSON; failures come back as tool errors (isError) with the
 * control plane's one-line message, so the assistant can read them.
 */
export const MCP_SERVER_NAME = 'lattice';

export interface McpServerOptions {
  /** The admin API, with the token of the admin user every proposal is recorded as (the control plane decides). */
  api: AdminApiClient;
  version: string;
}

const label = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a DNS label: a-z, 0-9, -');

function ok(value: unknown): CallToolResult {
  return { content: [{ type: 'text', text: JSON.stringify(value, null, 2) }] };
}

async function run(fn: () => Promise<unknown>): Promise<CallToolResult> {
  try {
    return ok(await fn());
  } catch (err) {
    return { isError: true, content: [{ type: 'text', text: (err as Error).message }] };
  }
}

interface AgentView {
  name: string;
  namespace: string;
  agentId: string;
}

/** The MCP server: registers the admin-API tools (read-only ones hinted readOnlyHint) over the given API client. */
export function createMcpServer(o: McpServerOptions): McpServer {
  const server = new McpServer({ name: MCP_SERVER_NAME, version: o.version }, { capabilities: { tools: {} } });
  const api = o.api;
  const readOnly = { readOnlyHint: true, openWorldHint: false } as const;
  const proposes = { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false } as const;

  // ---- read tools ----

  server.registerTool(
    'list_agents',
    {
      title: 'List agents',
      description: 'Enrolled agents (the overlay\'s peers): name, namespace, overlay addresses, status, allowed tools, parent agent.',
      inputSchema: { namespace: label.optional().describe('only this namespace') },
      annotations: readOnly,
    },
    ({ namespace }) => run(() => api.get(`${API_BASE}/agents`, { namespace })),
  );

  server.registerTool(
    'list_policies',
    {
      title: 'List network policies',
      description: 'Namespace network policies (JSON documents). Without a namespace: the policy of every namespace that has agents.',
      inputSchema: { namespace: label.optional() },
      annotations: readOnly,
    },
    ({ namespace }) =>
      run(async () => {
        let namespaces = namespace ? [namespace] : [];
        if (!namespace) {
          const { agents } = await api.get<{ agents: AgentView[] }>(`${API_BASE}/agents`);
          namespaces = [...new Set(agents.map((a) => a.namespace))].sort();
        }
        const out = [];
        for (const ns of namespaces) {
          try {
            out.push(await api.get(`${API_BASE}/policies/${encodeURIComponent(ns)}`));
          } catch (err) {
            if ((err as { status?: number }).status !== 404) throw err;
            out.push({ namespace: ns, policy: null, note: 'no namespace policy; agents run the policy of the token that enrolled them' });
          }
        }
        return { policies: out };
      }),
  );

  server.registerTool(
    'get_agent_policy',
    {
      title: 'Effective policy of an agent',
      description: 'The policy an agent runs now and where it comes from (namespace policy, or its token\'s).',
      inputSchema: { namespace: label, agent: label },
      annotations: readOnly,
    },
    ({ namespace, agent }) => run(() => api.get(`${API_BASE}/agents/${encodeURIComponent(agent)}/policy`, { namespace })),
  );

  server.registerTool(
    'list_tokens',
    {
      title: 'List enrollment tokens',
      description: 'Enrollment token records: namespace, tools, uses/limit, expiry. Never the secrets (the control plane keeps only their hashes).',
      inputSchema: { namespace: label.optional() },
      annotations: readOnly,
    },
    ({ namespace }) => run(() => api.get(`${API_BASE}/enrollment-tokens`, { namespace })),
  );

  server.registerTool(
    'list_audit_events',
    {
      title: 'Search audit events',
      description:
        'Audit events (flows, DNS, sandbox lifecycle, tool spans, enrollments, approvals), newest last. Filter by namespace, agentId, type or family ' +
        '(e.g. "flow", "flow.opened", "dns.refused"), since (ISO time or a duration like 15m), and for flows by verdict (denied, allowed, would-deny).',
      inputSchema: {
        namespace: label.optional(),
        agentId: z.string().max(64).optional(),
        type: z.string().max(64).optional(),
        since: z.string().max(40).optional(),
        verdict: z.enum(['allowed', 'denied', 'would-deny']).optional().describe('only flow events with this verdict'),
        limit: z.number().int().min(1).max(1000).optional(),
      },
      annotations: readOnly,
    },
    ({ namespace, agentId, type, since, verdict, limit }) =>
      run(async () => {
        const r = await api.get<{ events: { verdict?: string }[] } & Record<string, unknown>>(`${API_BASE}/audit/events`, {
          namespace,
          agentId,
          type: type ?? (verdict ? 'flow.opened' : undefined),
          since,
          limit: verdict ? undefined : limit,
        });
        if (!verdict) return r;
        const events = r.events.filter((e) => e.verdict === verdict);
        return { ...r, events: limit ? events.slice(-limit) : events };
      }),
  );

  server.registerTool(
    'list_traces',
    {
      title: 'Tool-call traces',
      description: 'Tool-call spans grouped into traces (across delegated agents), with violations counted.',
      inputSchema: { agentId: z.string().max(64).optional(), traceId: z.string().max(128).optional(), since: z.string().max(40).optional(), limit: z.number().int().min(1).max(100).optional() },
      annotations: readOnly,
    },
    (q) => run(() => api.get(`${API_BASE}/audit/traces`, q)),
  );

  server.registerTool(
    'list_egress_requests',
    {
      title: 'Egress requests',
      description: 'Destinations agents asked for (request_egress) that their policy does not allow.',
      inputSchema: { namespace: label.optional() },
      annotations: readOnly,
    },
    ({ namespace }) => run(() => api.get(`${API_BASE}/egress-requests`, { namespace })),
  );

  server.registerTool(
    'list_routes',
    {
      title: 'List routes',
      description: 'Routes peers advertise (subnet routers; 0.0.0.0/0 and ::/0 for exit nodes) and whether an operator approved them. Only approved routes are routed.',
      inputSchema: { namespace: label.optional(), state: z.enum(['pending', 'approved', 'rejected']).optional() },
      annotations: readOnly,
    },
    ({ namespace, state }) => run(() => api.get(`${API_BASE}/routes`, { namespace, state })),
  );

  server.registerTool(
    'list_approvals',
    {
      title: 'Pending changes',
      description: 'Changes proposed for human approval (default: pending), with their diffs.',
      inputSchema: { status: z.enum(['pending', 'applying', 'approved', 'rejected', 'stale', 'failed']).optional() },
      annotations: readOnly,
    },
    ({ status }) => run(() => api.get(`${API_BASE}/approvals`, { status: status ?? 'pending' })),
  );

  server.registerTool(
    'explain_flow',
    {
      title: 'Explain a flow',
      description:
        'Would a flow from an agent to address or host, port and protocol be allowed now, and by which rule (for a rule selecting ' +
          'peers by labels or names: the selector and the peers it selects now)? If denied by default, ' +
        'the minimal allow rule that would let exactly this flow through (propose it with propose_set_policy).',
      inputSchema: {
        namespace: label,
        agent: label,
        address: z.string().max(45).optional().describe('destination IPv4/IPv6 address'),
        host: z.string().max(253).optional().describe('destination DNS name'),
        port: z.number().int().min(0).max(65535).default(443),
        proto: z.enum(['tcp', 'udp', 'icmp']).default('tcp'),
      },
      annotations: readOnly,
    },
    (q) => run(() => api.post(`${API_BASE}/explain`, q)),
  );

  // ---- write tools: each creates a pending change, nothing more ----

  const propose = (body: Record<string, unknown>) =>
    run(async () => {
      const a = await api.post<{ id: string; status: string; summary: string; diff: string; base: unknown }>(`${API_BASE}/approvals`, body);
      return {
        pendingId: a.id,
        status: a.status,
        summary: a.summary,
        diff: a.diff,
        base: a.base,
        next: `nothing has changed yet: another admin user with the approver role must run \`lattice approvals approve ${a.id}\` (or reject it)`,
      };
    });

  server.registerTool(
    'propose_set_policy',
    {
      title: 'Propose a namespace policy',
      description: 'Propose replacing the network policy of a namespace. Validated now; applied only when a human approves, and refused then if the policy changed meanwhile.',
      inputSchema: {
        namespace: label,
        policy: z.record(z.unknown()).describe('the whole policy document: {version: 1, mode?, egress?: [rules], ingress?: [rules]}'),
        reason: z.string().max(1000).optional(),
      },
      annotations: proposes,
    },
    ({ namespace, policy, reason }) => propose({ kind: 'set-policy', namespace, policy, reason }),
  );

  server.registerTool(
    'propose_revoke_agent',
    {
      title: 'Propose revoking an agent',
      description: 'Propose revoking an agent (its key barred, address freed, its delegated agents revoked too). Applied only when a human approves.',
      inputSchema: { namespace: label, name: label, reason: z.string().max(1000).optional() },
      annotations: proposes,
    },
    ({ namespace, name, reason }) => propose({ kind: 'revoke-agent', namespace, name, reason }),
  );

  server.registerTool(
    'propose_approve_route',
    {
      title: 'Propose approving a route',
      description:
        'Propose approving a route a peer advertises (a subnet such as 10.200.0.0/24, or "exit" for an exit node\'s default routes). ' +
        'Applied only when a human approves; then every launcher routes it to that peer.',
      inputSchema: { namespace: label, name: label, cidr: z.string().max(64).describe('a CIDR the peer advertises, or "exit"'), reason: z.string().max(1000).optional() },
      annotations: proposes,
    },
    ({ namespace, name, cidr, reason }) => propose({ kind: 'approve-route', namespace, name, cidr, reason }),
  );

  server.registerTool(
    'propose_create_token',
    {
      title: 'Propose an enrollment token',
      description: 'Propose creating an enrollment token. When approved, the secret is shown to the approver only, never to this tool.',
      inputSchema: {
        namespace: label,
        allowedTools: z.array(z.string().max(128)).max(64).optional(),
        allowedNamespaces: z.array(label).max(64).optional(),
        limit: z.number().int().min(1).max(10_000).optional(),
        ttl: z.string().max(16).optional().describe('e.g. 15m, 1h, 7d'),
        policy: z.record(z.unknown()).optional(),
        reason: z.string().max(1000).optional(),
      },
      annotations: proposes,
    },
    ({ reason, ...token }) => propose({ kind: 'create-token', namespace: token.namespace, token: stripUndefined(token), reason }),
  );

  server.registerTool(
    'approve_egress_request',
    {
      title: "Propose approving an agent's egress request",
      description:
        'Propose approving a pending egress request (list them with list_egress_requests): adds one allow rule for exactly its ' +
        'destination, port and protocol to the namespace policy. Applied only when a human approves, and refused then if the policy changed meanwhile.',
      inputSchema: { namespace: label, requestId: z.string().uuid().describe('the id of the egress request'), reason: z.string().max(1000).optional() },
      annotations: proposes,
    },
    ({ namespace, requestId, reason }) => propose({ kind: 'approve-egress', namespace, requestId, reason }),
  );

  return server;
}

function stripUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
