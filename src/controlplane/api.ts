import { CpErrorCode, ControlPlaneError, badRequest, isLabel } from './types.js';
import type { ControlPlaneService } from './service.js';
import { callerName, type HttpApi } from './http.js';

/** Base path of the admin API. */
export const API_BASE = '/api/v1/agent-isolation';

/** Mount the admin routes (tokens, agents, policies) and a public health check. */
export function mountAdminRoutes(api: HttpApi, svc: ControlPlaneService): void {
  api.route('GET', '/healthz', () => ({ ok: true, clusterId: svc.info.clusterId }), { auth: 'none' });

  api.route('POST', `${API_BASE}/enrollment-tokens`, async (ctx) => {
    const { token, record } = await svc.createToken(await ctx.json(), ctx.user!.name);
    return {
      status: 201,
      body: {
        token,
        id: record.id,
        namespace: record.namespace,
        allowedTools: record.allowedTools,
        allowedNamespaces: record.allowedNamespaces,
        limit: record.limit,
        expiresAt: new Date(record.expiresAt).toISOString(),
        policy: record.policy ?? null,
        modes: record.modes,
        labels: record.labels ?? {},
      },
    };
  });

  api.route('GET', `${API_BASE}/agents`, async (ctx) => {
    const ns = ctx.url.searchParams.get('namespace') ?? undefined;
    return { agents: await svc.listAgents(ns || undefined) };
  });

  api.route('DELETE', `${API_BASE}/agents/:name`, async (ctx) => {
    const ns = ctx.url.searchParams.get('namespace');
    if (!ns) throw badRequest('namespace query parameter is required: DELETE .../agents/NAME?namespace=NS');
    if (!isLabel(ctx.params.name)) throw badRequest('agent name must be a DNS label');
    // Revoking a parent revokes the agents it delegated to (recursively); they are listed in `children`.
    const { revoked: rec, children } = await svc.revokeAgentTree(ns, ctx.params.name, `revoked by admin user ${ctx.user!.name}`);
    const iso = (r: typeof rec) => ({ ...r, revokedAt: new Date(r.revokedAt).toISOString() });
    return { revoked: iso(rec), children: children.map(iso) };
  });

  // Labels: {"set": {"role": "db"}, "remove": ["tier"]} -> the agent's labels after the edit.
  api.route('PATCH', `${API_BASE}/agents/:name/labels`, async (ctx) => {
    const ns = ctx.url.searchParams.get('namespace');
    if (!ns) throw badRequest('namespace query parameter is required: PATCH .../agents/NAME/labels?namespace=NS');
    const labels = await svc.setLabels(ns, ctx.params.name, await ctx.json(), ctx.user!.name);
    return { namespace: ns, name: ctx.params.name, labels };
  });

  // Static peers (#17 item 6): {namespace, name, publicKey, endpoint?} -> the peer with its overlay addresses.
  api.route('POST', `${API_BASE}/static-peers`, async (ctx) => {
    const a = await svc.addStaticPeer(await ctx.json());
    return { status: 201, body: { name: a.name, namespace: a.namespace, publicKey: a.publicKey, ipv4: a.address!.ipv4, ipv6: a.address!.ipv6, endpoint: a.endpoint ?? null } };
  });

  // Routes (routes.ts): list, and approve | reject | withdraw one ({"cidr": "10.200.0.0/24" | "exit", "by"?}).
  api.route('GET', `${API_BASE}/routes`, async (ctx) => {
    const q = ctx.url.searchParams;
    return { routes: await svc.routes.list({ namespace: q.get('namespace') || undefined, state: q.get('state') || undefined }) };
  });

  api.route('POST', `${API_BASE}/agents/:name/routes/:op`, async (ctx) => {
    const ns = ctx.url.searchParams.get('namespace');
    if (!ns) throw badRequest('namespace query parameter is required: POST .../agents/NAME/routes/approve?namespace=NS');
    // The operator recorded is the verified caller (admins.ts); a body `by` naming someone else is refused.
    const body = (await ctx.json()) ?? {};
    const b = typeof body === 'object' && !Array.isArray(body) ? { ...(body as Record<string, unknown>), by: callerName(ctx, (body as { by?: unknown }).by, 'by') } : body;
    return { namespace: ns, name: ctx.params.name, routes: await svc.routes.decide(ctx.params.op, ns, ctx.params.name, b) };
  });

  // A namespace's default exit node (namespaces.ts): read (viewer), set or clear ({"exitNode": null}; admin).
  api.route('GET', `${API_BASE}/namespaces/:namespace/exit-node`, async (ctx) => ({ namespace: ctx.params.namespace, exitNode: (await svc.exitDefaults.get(ctx.params.namespace)) ?? null }));
  api.route('PUT', `${API_BASE}/namespaces/:namespace/exit-node`, async (ctx) => ({ namespace: ctx.params.namespace, exitNode: (await svc.exitDefaults.set(ctx.params.namespace, await ctx.json(), ctx.user!.name)) ?? null }));

  api.route('PUT', `${API_BASE}/policies/:namespace`, async (ctx) => {
    const body = await ctx.json();
    if (body === undefined) throw badRequest('body must be a policy JSON object');
    const rec = await svc.setPolicy(ctx.params.namespace, body, ctx.user!.name);
    return { namespace: rec.namespace, updatedAt: new Date(rec.updatedAt).toISOString() };
  });

  api.route('GET', `${API_BASE}/policies/:namespace`, async (ctx) => {
    const rec = await svc.getPolicy(ctx.params.namespace);
    if (!rec) throw new ControlPlaneError(CpErrorCode.NotFound, `no policy set for namespace ${ctx.params.namespace}`);
    return { namespace: rec.namespace, policy: rec.policy, updatedAt: new Date(rec.updatedAt).toISOString() };
  });
}
