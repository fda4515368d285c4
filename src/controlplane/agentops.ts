import { API_BASE } from './api.js';
import type { EgressRequests } from './egress.js';
import { HttpError, type HttpApi } from './http.js';
import { JwtError, type AgentClaims } from './jwt.js';
import type { ControlPlaneService } from './service.js';
import { CpErrorCode, ControlPlaneError, badRequest, isLabel, type TokenRecord } from './types.js';

/**
 * Operations agents perform with their own JWT (not the admin token): delegation and egress requests.
 * Served over NATS (what the agent API in the launcher uses: the launcher always holds a NATS
 * connection) and over HTTP (POST .../delegate with `Authorization: Bearer <agent JWT>`).
 */
export const AGENT_SUBJECTS = {
  /** {jwt, ...DelegationRequest} -> DelegationReply */
  delegate: 'lattice.cp.delegate',
  /** {jwt, host, port, proto?, reason?} -> EgressRequestRecord */
  egressRequest: 'lattice.cp.egress-request',
} as const;

export interface DelegationReply {
  /** The child's one-time enrollment token (give it to the child's launcher: sandbox start --token). */
  token: string;
  id: string;
  parentAgentId: string;
  namespace: string;
  allowedTools: string[];
  allowedNamespaces: string[];
  limit: number;
  expiresAt: string;
  notAfter: string;
  modes: TokenRecord['modes'];
}

/** The reply to a successful delegation: the child token, its record id, parent, namespace, allowed tools and namespaces, limit, and expiry times (ISO 8601). */
export function delegationReply(token: string, r: TokenRecord): DelegationReply {
  return {
    token,
    id: r.id,
    parentAgentId: r.parent!.agentId,
    namespace: r.namespace,
    allowedTools: r.allowedTools,
    allowedNamespaces: r.allowedNamespaces,
    limit: r.limit,
    expiresAt: new Date(r.expiresAt).toISOString(),
    notAfter: new Date(r.notAfter!).toISOString(),
    modes: r.modes,
  };
}

async function agentClaims(svc: ControlPlaneService, jwt: unknown): Promise<AgentClaims> {
  if (typeof jwt !== 'string') throw new ControlPlaneError(CpErrorCode.Unauthorized, 'an agent JWT is required');
  try {
    return await svc.verifyJwt(jwt);
  } catch (err) {
    if (err instanceof JwtError) throw new ControlPlaneError(CpErrorCode.Unauthorized, err.message, { cause: err });
    throw err;
  }
}

function splitJwt(req: unknown): { jwt: unknown; body: Record<string, unknown> } {
  if (typeof req !== 'object' || req === null || Array.isArray(req)) throw badRequest('request must be a JSON object');
  const { jwt, ...body } = req as Record<string, unknown>;
  return { jwt, body };
}

/** NATS request handlers, keyed by subject (served by serveNatsApi's loop). */
export function agentOpsHandlers(svc: ControlPlaneService, egress: EgressRequests): Record<string, (req: unknown) => Promise<unknown>> {
  return {
    [AGENT_SUBJECTS.delegate]: async (req) => {
      const { jwt, body } = splitJwt(req);
      const { token, record } = await svc.delegate(jwt, body);
      return delegationReply(token, record);
    },
    [AGENT_SUBJECTS.egressRequest]: async (req) => {
      const { jwt, body } = splitJwt(req);
      return egress.create(await agentClaims(svc, jwt), body);
    },
  };
}

/** HTTP routes: delegation (agent JWT), the delegation tree and the egress-request list (admin). */
export function mountAgentOpsRoutes(api: HttpApi, svc: ControlPlaneService, egress: EgressRequests): void {
  api.route(
    'POST',
    `${API_BASE}/delegate`,
    async (ctx) => {
      const m = /^Bearer\s+(\S+)$/i.exec(ctx.req.headers.authorization ?? '');
      if (!m) throw new HttpError(401, CpErrorCode.Unauthorized, 'Authorization: Bearer <agent JWT> is required');
      // The JWT is checked before a byte of the body is read.
      await agentClaims(svc, m[1]);
      const { token, record } = await svc.delegate(m[1], await ctx.json());
      return { status: 201, body: delegationReply(token, record) };
    },
    { auth: 'none' },
  );

  api.route('GET', `${API_BASE}/agents/:name/tree`, async (ctx) => {
    const ns = ctx.url.searchParams.get('namespace');
    if (!ns) throw badRequest('namespace query parameter is required: GET .../agents/NAME/tree?namespace=NS');
    if (!isLabel(ctx.params.name)) throw badRequest('agent name must be a DNS label');
    return svc.agentTree(ns, ctx.params.name);
  });

  api.route('GET', `${API_BASE}/egress-requests`, async (ctx) => {
    const ns = ctx.url.searchParams.get('namespace') ?? undefined;
    return { requests: (await egress.list(ns || undefined)).map((r) => ({ ...r, createdAt: new Date(r.createdAt).toISOString() })) };
  });
}
