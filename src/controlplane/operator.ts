import type { NatsConnection } from 'nats';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { AUDIT_EVENT_VERSION, auditSubject, newEventId } from '../audit/events.js';
import { API_BASE } from './api.js';
import { ApprovalConflictError, Approvals, APPROVALS_BUCKET, type ApprovalAuditDraft, type ApprovalTargets } from './approvals.js';
import { EGRESS_BUCKET } from './egress.js';
import { explainFlow, parseExplainQuery } from './explain.js';
import { HttpError, callerName, type HttpApi, type RouteContext } from './http.js';
import { AdminRole } from './admins.js';
import { decodeJson, getJson, type KvStore } from './kv.js';
import { agentKey, directorySnapshot, peerOf, resolvePolicyRef } from './service.js';
import { BUCKETS, CpErrorCode, ControlPlaneError, badRequest, isLabel, type AgentRecord, type NamespacePolicyRecord, type TokenRecord } from './types.js';

/**
 * Operator routes (for people and for `lattice mcp`), mounted beside the admin routes:
 *
 *   GET  .../approvals[?status=pending]      list pending changes (oldest first)
 *   POST .../approvals                       propose {kind, namespace, name?, policy?, token?, requestId?, reason?} -> 201 (viewer)
 *   GET  .../approvals/:id                   one change with its diff and base
 *   POST .../approvals/:id/approve           {note?} -> applied (409 EAPPROVAL_STALE when its base moved; approver;
 *                                            403 EAPPROVAL_SELF for the proposer)
 *   POST .../approvals/:id/reject            {note?} (approver)
 *   GET  .../enrollment-tokens[?namespace=]  token records without secrets (only their hashes are stored anyway)
 *   GET  .../agents/:name/policy?namespace=  the agent's effective policy and where it comes from
 *   POST .../explain                         {namespace, agent, address?|host?, port, proto} -> decision and rule
 *
 * All need an admin identity (admins.ts; the role in brackets, else viewer for reads). The proposer and the
 * approver are the verified users of the requests; a body's `proposer` / `by` naming someone else is refused.
 * Approval decisions are published to the audit stream as approval.proposed / approval.decided
 * (launcherId "control-plane").
 */
export interface OperatorDeps {
  store: KvStore;
  nc: NatsConnection;
  targets: ApprovalTargets;
  validatePolicy: (p: unknown) => void;
  clock: Clock;
  log?: Logger;
}

/** Publish approval audit events on lattice.audit.<ns>._.<type>; failures are logged, never thrown. */
export function natsApprovalAudit(nc: NatsConnection, clock: Clock, log?: Logger): (e: ApprovalAuditDraft) => Promise<void> {
  const js = nc.jetstream();
  // seq: a per-process counter started at the wall clock in ms, so it increases across restarts.
  let seq = clock.now();
  return async (e) => {
    const id = newEventId(clock.now());
    const ev = { v: AUDIT_EVENT_VERSION, id, seq: seq++, launcherId: 'control-plane', ts: new Date(clock.now()).toISOString(), ...e };
    try {
      await js.publish(auditSubject(ev), JSON.stringify(ev), { msgID: id });
    } catch (err) {
      log?.warn({ err: (err as Error).message, type: e.type, approvalId: e.approvalId }, 'approval audit event not published (is the audit stream there?)');
    }
  };
}

/**
 * Mount the operator routes (approvals, explain, egress requests) on `api`; returns the `Approvals`
 * store the routes use. Proposals and decisions are published to the audit stream (best effort: a
 * missing stream is logged, not fatal).
 */
export async function mountOperatorRoutes(api: HttpApi, deps: OperatorDeps): Promise<Approvals> {
  const [bucket, policies, agents, tokens, egress] = await Promise.all([
    deps.store.bucket(APPROVALS_BUCKET),
    deps.store.bucket(BUCKETS.policies),
    deps.store.bucket(BUCKETS.agents),
    deps.store.bucket(BUCKETS.tokens),
    deps.store.bucket(EGRESS_BUCKET),
  ]);
  const approvals = new Approvals({
    bucket,
    policies,
    agents,
    egress,
    targets: deps.targets,
    validatePolicy: deps.validatePolicy,
    clock: deps.clock,
    audit: natsApprovalAudit(deps.nc, deps.clock, deps.log),
  });
  const conflict = (err: unknown) => {
    if (err instanceof ApprovalConflictError) return new HttpError(err.code === 'EAPPROVAL_SELF' ? 403 : 409, err.code, err.message);
    return err;
  };

  api.route('GET', `${API_BASE}/approvals`, async (ctx) => ({ approvals: await approvals.list(ctx.url.searchParams.get('status') ?? undefined) }));
  // The body's proposer / by may name the caller (older clients send it) and nobody else.
  const asCaller = async (ctx: RouteContext, field: 'proposer' | 'by') => {
    const body = await ctx.json();
    const b = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined;
    return b === undefined ? body : { ...b, [field]: callerName(ctx, b[field], field) };
  };
  api.route('POST', `${API_BASE}/approvals`, async (ctx) => ({ status: 201, body: await approvals.propose(await asCaller(ctx, 'proposer')) }), { role: AdminRole.Viewer });
  api.route('GET', `${API_BASE}/approvals/:id`, async (ctx) => approvals.get(ctx.params.id));
  api.route('POST', `${API_BASE}/approvals/:id/approve`, async (ctx) => {
    try {
      return await approvals.approve(ctx.params.id, (await asCaller(ctx, 'by')) ?? { by: callerName(ctx, undefined, 'by') });
    } catch (err) {
      throw conflict(err);
    }
  }, { role: AdminRole.Approver });
  api.route('POST', `${API_BASE}/approvals/:id/reject`, async (ctx) => {
    try {
      return { approval: await approvals.reject(ctx.params.id, (await asCaller(ctx, 'by')) ?? { by: callerName(ctx, undefined, 'by') }) };
    } catch (err) {
      throw conflict(err);
    }
  }, { role: AdminRole.Approver });

  api.route('GET', `${API_BASE}/enrollment-tokens`, async (ctx) => {
    const ns = ctx.url.searchParams.get('namespace') ?? undefined;
    if (ns !== undefined && !isLabel(ns)) throw badRequest('namespace must be a DNS label');
    const entries = await Promise.all((await tokens.keys()).map((k) => tokens.get(k)));
    const list = entries
      .filter((e) => e !== null)
      .map((e) => decodeJson<TokenRecord>(e.value))
      .filter((t) => ns === undefined || t.namespace === ns)
      .map((t) => ({
        id: t.id,
        namespace: t.namespace,
        allowedTools: t.allowedTools,
        allowedNamespaces: t.allowedNamespaces,
        limit: t.limit,
        uses: t.uses,
        expiresAt: new Date(t.expiresAt).toISOString(),
        createdAt: new Date(t.createdAt).toISOString(),
        modes: t.modes,
        hasPolicy: t.policy !== undefined,
        ...(t.parent ? { parentAgentId: t.parent.agentId } : {}),
      }))
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    return { tokens: list };
  });

  const effectivePolicy = async (namespace: string, name: string) => {
    if (!isLabel(namespace) || !isLabel(name)) throw badRequest('namespace and agent name must be DNS labels');
    const a = await getJson<AgentRecord>(agents, agentKey(namespace, name));
    if (!a) throw new ControlPlaneError(CpErrorCode.NotFound, `no agent ${name} in namespace ${namespace}`);
    const ns = await getJson<NamespacePolicyRecord>(policies, namespace);
    if (ns) return { source: 'namespace', policy: ns.value.policy, revision: ns.revision, agent: a.value };
    return { source: a.value.policy ? 'token' : 'none', policy: resolvePolicyRef(a.value.policy) ?? null, agent: a.value };
  };

  api.route('GET', `${API_BASE}/agents/:name/policy`, async (ctx) => {
    const ns = ctx.url.searchParams.get('namespace');
    if (!ns) throw badRequest('namespace query parameter is required');
    const { agent: _agent, ...eff } = await effectivePolicy(ns, ctx.params.name);
    return eff;
  });

  api.route('POST', `${API_BASE}/explain`, async (ctx) => {
    const body = (await ctx.json()) as Record<string, unknown> | undefined;
    if (typeof body !== 'object' || body === null) throw badRequest('body must be {namespace, agent, address?|host?, port, proto}');
    const q = parseExplainQuery(body);
    const eff = await effectivePolicy(body.namespace as string, body.agent as string);
    // "peers" rules are answered against the directory the agent sees now (its namespaces' active agents).
    const self = eff.agent;
    const spaces = [...new Set([self.namespace, ...self.allowedNamespaces])];
    const keys = (await Promise.all(spaces.map((s) => agents.keys(`a.${s}.*`)))).flat();
    const recs = await Promise.all(keys.map((k) => getJson<AgentRecord>(agents, k)));
    const peers = recs.flatMap((r) => (r && r.value.status === 'active' && r.value.agentId !== self.agentId ? [peerOf(r.value)] : []));
    return { agent: `${String(body.namespace)}/${String(body.agent)}`, policySource: eff.source, ...explainFlow(eff.policy, q, deps.clock.now(), directorySnapshot(self.namespace, peers)) };
  }, { role: AdminRole.Viewer });
  return approvals;
}
