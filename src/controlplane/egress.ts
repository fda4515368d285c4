import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { AgentClaims } from './jwt.js';
import { encodeJson, getJson, type KvBucket, type KvStore } from './kv.js';
import { badRequest, isLabel } from './types.js';

/**
 * Egress requests: an agent asks (through its agent API, tool request_egress) for a destination its
 * policy does not allow; the request is stored for an operator to read (GET .../egress-requests).
 * Approving is changing the namespace policy; this store only records the ask.
 *
 *   lattice_egress_requests   r.<ns>.<id>   EgressRequestRecord
 */
export const EGRESS_BUCKET = 'lattice_egress_requests';

/** pending: asked; approved: an approve-egress change (approvals.ts) added an allow rule for it. */
export const EgressRequestStatus = { Pending: 'pending', Approved: 'approved' } as const;
export type EgressRequestStatus = (typeof EgressRequestStatus)[keyof typeof EgressRequestStatus];

export interface EgressRequestRecord {
  id: string;
  agentId: string;
  namespace: string;
  name: string;
  /** Hostname or IP address. */
  host: string;
  port: number;
  proto: 'tcp' | 'udp';
  reason?: string;
  status: EgressRequestStatus;
  createdAt: number;
  /** When approved: the approval that added the rule, and the rule's id. */
  approval?: { id: string; ruleId: string };
}

/** KV key of one egress request. */
export const egressRequestKey = (namespace: string, id: string) => `r.${namespace}.${id}`;

const HOST_RE = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$/;
/** Requests a namespace may hold at once (agents cannot flood the operator's queue or the bucket). */
export const MAX_PENDING_PER_NAMESPACE = 1000;

/** Validate the agent-supplied part of a request (untrusted). */
export function parseEgressRequest(body: unknown): Pick<EgressRequestRecord, 'host' | 'port' | 'proto' | 'reason'> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('egress request must be a JSON object');
  const b = body as Record<string, unknown>;
  if (typeof b.host !== 'string' || !HOST_RE.test(b.host)) throw badRequest('host must be a hostname or an IP address');
  if (!Number.isInteger(b.port) || (b.port as number) < 1 || (b.port as number) > 65535) throw badRequest('port must be 1..65535');
  const proto = b.proto ?? 'tcp';
  if (proto !== 'tcp' && proto !== 'udp') throw badRequest('proto must be tcp or udp');
  if (b.reason !== undefined && (typeof b.reason !== 'string' || b.reason.length > 512)) throw badRequest('reason must be a string of at most 512 characters');
  return { host: b.host, port: b.port as number, proto, ...(b.reason !== undefined ? { reason: b.reason as string } : {}) };
}

/** The store of agents' egress requests (`lattice_egress_requests`): `open`, then record and list per namespace. */
export class EgressRequests {
  private constructor(
    private readonly bucket: KvBucket,
    private readonly clock: Clock,
  ) {}

  static async open(store: KvStore, clock: Clock): Promise<EgressRequests> {
    return new EgressRequests(await store.bucket(EGRESS_BUCKET), clock);
  }

  async create(claims: AgentClaims, body: unknown): Promise<EgressRequestRecord> {
    const req = parseEgressRequest(body);
    const mine = await this.bucket.keys(`r.${claims.ns}.*`);
    if (mine.length >= MAX_PENDING_PER_NAMESPACE) throw badRequest('too many pending egress requests in this namespace; ask an operator to clear them');
    const rec: EgressRequestRecord = {
      id: randomUUID(),
      agentId: claims.sub,
      namespace: claims.ns,
      name: claims.name,
      ...req,
      status: EgressRequestStatus.Pending,
      createdAt: this.clock.now(),
    };
    await this.bucket.create(egressRequestKey(rec.namespace, rec.id), encodeJson(rec));
    return rec;
  }

  async list(namespace?: string): Promise<EgressRequestRecord[]> {
    if (namespace !== undefined && !isLabel(namespace)) throw badRequest('bad namespace');
    const keys = await this.bucket.keys(namespace ? `r.${namespace}.*` : 'r.*.*');
    const recs = await Promise.all(keys.map((k) => getJson<EgressRequestRecord>(this.bucket, k)));
    return recs.filter((r) => !!r).map((r) => r.value).sort((a, b) => a.createdAt - b.createdAt);
  }
}
