import { parseDuration } from './tokens.js';
import {
  CpErrorCode,
  ControlPlaneError,
  EnforcementMode,
  badRequest,
  isLabel,
  toolList,
  type AgentRecord,
  type Modes,
  type TokenRecord,
} from './types.js';

/**
 * Delegation rules, pure: what an agent may hand to a child. A child gets at most what its parent
 * holds: tools are a subset of the parent's, its namespace and reachable namespaces lie within the
 * parent's, its enforcement is at least as strict, and nothing issued to it outlives the parent's
 * JWT. Asking for more is refused (EFORBIDDEN, 403), never silently trimmed, so the parent learns
 * what it cannot grant; only the lifetime is clamped, since "as long as I live" is the usual intent.
 */

/** The body of POST /api/v1/agent-isolation/delegate (and of the agent API's POST /v1/delegate). */
export interface DelegationRequest {
  /** Namespace of the child: the parent's (default) or one of its allowed namespaces. */
  namespace?: string;
  /** Default: all of the parent's tools. */
  allowedTools?: string[];
  /** Default: none besides the child's own namespace. */
  allowedNamespaces?: string[];
  /** Enrollments the token allows (default 1). */
  limit?: number;
  /** Lifetime of the token and of the child's JWT: a duration ("15m") or seconds; clamped to the parent's. */
  ttl?: string | number;
  /** Only stricter than the parent's (enforce > audit > disabled). */
  modes?: { enforcement?: string };
}

export const MAX_DELEGATION_LIMIT = 100;
export const DEFAULT_DELEGATION_TTL_MS = 3600_000;

const STRICTNESS: Record<string, number> = { [EnforcementMode.Disabled]: 0, [EnforcementMode.Audit]: 1, [EnforcementMode.Enforce]: 2 };

export const forbidden = (msg: string) => new ControlPlaneError(CpErrorCode.Forbidden, msg);

/** The parent as delegation sees it: its active record and the expiry of the JWT it authenticated with. */
export type DelegationParent = Pick<AgentRecord, 'agentId' | 'name' | 'namespace' | 'publicKey' | 'allowedTools' | 'allowedNamespaces' | 'modes' | 'policy'> & {
  /** Epoch ms: the exp of the JWT presented. */
  jwtExpiresAt: number;
};

function names(v: unknown, what: string, check: (s: unknown) => boolean): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length > 256 || !v.every(check)) throw badRequest(`${what} must be a list of names`);
  return [...new Set(v as string[])];
}

/** Validate a delegation request against its parent; the token record to store for the child (uses = 0). */
export function planDelegation(parent: DelegationParent, body: unknown, now: number, id: string): TokenRecord {
  if (body === undefined) body = {};
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('delegation request must be a JSON object');
  const b = body as Record<string, unknown>;
  const known = new Set(['namespace', 'allowedTools', 'allowedNamespaces', 'limit', 'ttl', 'modes', 'jwt']);
  for (const k of Object.keys(b)) if (!known.has(k)) throw badRequest(`unknown field ${JSON.stringify(k)}`);

  const remaining = parent.jwtExpiresAt - now;
  if (remaining <= 0) throw new ControlPlaneError(CpErrorCode.Unauthorized, 'the delegating JWT has expired');

  const reach = new Set([parent.namespace, ...parent.allowedNamespaces]);
  const namespace = b.namespace ?? parent.namespace;
  if (!isLabel(namespace)) throw badRequest('namespace must be a DNS label');
  if (!reach.has(namespace)) throw forbidden(`namespace ${namespace} is outside the delegating agent's namespaces (${[...reach].join(', ')})`);

  const tools: string[] = b.allowedTools === undefined ? [...parent.allowedTools] : toolList(b.allowedTools, 'allowedTools');
  const extraTools = tools.filter((t) => !parent.allowedTools.includes(t));
  if (extraTools.length) throw forbidden(`cannot delegate tools the delegating agent lacks: ${extraTools.join(', ')}`);

  const nsa = (names(b.allowedNamespaces, 'allowedNamespaces', isLabel) ?? []).filter((n) => n !== namespace);
  const extraNs = nsa.filter((n) => !reach.has(n));
  if (extraNs.length) throw forbidden(`cannot delegate namespaces the delegating agent cannot reach: ${extraNs.join(', ')}`);

  const limit = b.limit ?? 1;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_DELEGATION_LIMIT) {
    throw badRequest(`limit must be an integer from 1 to ${MAX_DELEGATION_LIMIT}`);
  }

  let ttl = DEFAULT_DELEGATION_TTL_MS;
  if (b.ttl !== undefined) {
    ttl = typeof b.ttl === 'number' ? b.ttl * 1000 : typeof b.ttl === 'string' ? parseDuration(b.ttl) : NaN;
    if (!Number.isFinite(ttl) || ttl <= 0) throw badRequest('ttl must be a positive duration (e.g. "15m") or seconds');
  }
  const notAfter = parent.jwtExpiresAt;
  const expiresAt = Math.min(now + ttl, notAfter);

  const modes: Modes = { ...parent.modes };
  if (b.modes !== undefined) {
    const m = b.modes as Record<string, unknown> | null;
    if (typeof m !== 'object' || m === null) throw badRequest('modes must be an object {enforcement}');
    for (const k of Object.keys(m)) if (k !== 'enforcement') throw badRequest(`modes.${k} cannot be delegated (the child inherits it)`);
    if (m.enforcement !== undefined) {
      if (typeof m.enforcement !== 'string' || !(m.enforcement in STRICTNESS)) throw badRequest(`modes.enforcement must be one of ${Object.keys(STRICTNESS).join(', ')}`);
      if (STRICTNESS[m.enforcement] < STRICTNESS[parent.modes.enforcement]) {
        throw forbidden(`enforcement ${m.enforcement} is weaker than the delegating agent's (${parent.modes.enforcement})`);
      }
      modes.enforcement = m.enforcement as Modes['enforcement'];
    }
  }

  return {
    id,
    namespace,
    allowedTools: tools,
    allowedNamespaces: nsa,
    limit,
    uses: 0,
    expiresAt,
    createdAt: now,
    ...(parent.policy ? { policy: parent.policy } : {}),
    modes,
    parent: { agentId: parent.agentId, namespace: parent.namespace, name: parent.name, publicKey: parent.publicKey },
    notAfter,
  };
}

/** Lifetime of a JWT issued now to an agent whose token carried `notAfter`: never past it. */
export function clampJwtTtl(ttlMs: number, now: number, notAfter?: number): number {
  if (notAfter === undefined) return ttlMs;
  return Math.max(0, Math.min(ttlMs, notAfter - now));
}

/** A node of GET .../agents/:name/tree. */
export interface AgentTreeNode<V> {
  agent: V;
  children: AgentTreeNode<V>[];
}

/** Build the delegation tree under `rootId` from a flat list (cycles and missing parents are ignored). */
export function buildAgentTree<V extends { agentId: string; parentAgentId?: string }>(all: V[], rootId: string): AgentTreeNode<V> | null {
  const byId = new Map(all.map((a) => [a.agentId, a]));
  const kids = new Map<string, V[]>();
  for (const a of all) {
    if (!a.parentAgentId) continue;
    const l = kids.get(a.parentAgentId) ?? [];
    l.push(a);
    kids.set(a.parentAgentId, l);
  }
  const seen = new Set<string>();
  const node = (a: V): AgentTreeNode<V> => {
    seen.add(a.agentId);
    return { agent: a, children: (kids.get(a.agentId) ?? []).filter((c) => !seen.has(c.agentId)).map(node) };
  };
  const root = byId.get(rootId);
  return root ? node(root) : null;
}
