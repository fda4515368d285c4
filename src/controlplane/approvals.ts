import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.js';
import { LatticeError } from '../errors.js';
import { KvConflictError, decodeJson, encodeJson, getJson, type KvBucket } from './kv.js';
import { lineDiff, prettyJson } from './textdiff.js';
import { EgressRequestStatus, egressRequestKey, type EgressRequestRecord } from './egress.js';
import { minimalAllowRule } from './explain.js';
import { parseIp } from '../net/addr.js';
import { buildTokenRecord } from './tokens.js';
import { agentKey } from './service.js';
import { routeArg } from './routes.js';
import { CpErrorCode, ControlPlaneError, badRequest, isLabel, type AgentRecord, type NamespacePolicyRecord, type TokenRecord } from './types.js';

/**
 * Approvals: changes proposed by a machine (the MCP server, a script) wait here until a human approves
 * or rejects them. Nothing a proposal names is touched until `approve`.
 *
 *   lattice_approvals   c.<uuid>   ApprovalRecord
 *
 * Life of a change
 *   propose  validate the change now (a bad policy is refused at once, with the validator's message),
 *            read the revision of the KV key it changes (its *base*), store {change, diff, base} as
 *            pending, audit `approval.proposed`.
 *   approve  pending -> applying (compare-and-set on the approval record: two approvers cannot both
 *            apply it), apply against the base, then approved | stale | failed; audit `approval.decided`.
 *              set-policy    written with compare-and-set at the base revision of lattice_policies/<ns>
 *                            (create when the base was "absent"): if anyone changed that policy since the
 *                            proposal, the write is refused and the change goes stale.
 *              revoke-agent  refused (stale) unless lattice_agents/a.<ns>.<name> is still at its base
 *                            revision, i.e. the same enrollment the proposer saw; then revoked (with the
 *                            agents it delegated to). The check and the revoke are two steps.
 *              create-token  no base (a new token changes nothing that exists); the secret is returned to
 *                            the approver only and never stored in the approval record.
 *              approve-route base: the advertising agent's record; refused (stale) unless the same agent (same
 *                            public key) still advertises the route, not approved yet; then approved as the
 *                            approver (routes.ts). Other changes to the record (an endpoint) do not matter.
 *   reject   pending -> rejected; audit.
 *
 * Who: `proposer` and `by` are the verified admin users of the requests (admins.ts; the HTTP routes in
 * operator.ts fill them in and refuse a body that names someone else). Four-eyes: a change is never approved
 * by its proposer, root included (EAPPROVAL_SELF); the proposer may reject (withdraw) it.
 * A record left in `applying` by a crash stays there; `show` tells, and it can be proposed again.
 */
export const APPROVALS_BUCKET = 'lattice_approvals';
/** Pending changes held at once; more proposals are refused until some are decided. */
export const MAX_PENDING = 1000;

/**
 * approve-egress: an agent's egress request (egress.ts) approved by adding one allow rule for exactly its
 * destination, port and protocol (explain.ts minimalAllowRule) to the namespace policy; applied like
 * set-policy (refused as stale if the policy moved), then the request is marked approved.
 * approve-route: a route an agent advertises (routes.ts) approved, if the same key still advertises it.
 */
export const ChangeKind = { SetPolicy: 'set-policy', RevokeAgent: 'revoke-agent', CreateToken: 'create-token', ApproveEgress: 'approve-egress', ApproveRoute: 'approve-route' } as const;
export type ChangeKind = (typeof ChangeKind)[keyof typeof ChangeKind];

export const ApprovalStatus = {
  Pending: 'pending',
  Applying: 'applying',
  Approved: 'approved',
  Rejected: 'rejected',
  /** The base moved since the proposal; nothing was applied. */
  Stale: 'stale',
  /** Applying failed for another reason (see `note`); nothing was applied. */
  Failed: 'failed',
} as const;
export type ApprovalStatus = (typeof ApprovalStatus)[keyof typeof ApprovalStatus];

export interface ApprovalRecord {
  id: string;
  kind: ChangeKind;
  status: ApprovalStatus;
  namespace: string;
  /** The agent, for revoke-agent. */
  name?: string;
  proposer: string;
  reason?: string;
  /**
   * The new policy document (set-policy), the token request (create-token), null (revoke-agent),
   * {requestId, ruleId, policy} (approve-egress: the whole new policy document).
   */
  change: unknown;
  /** The KV key the change applies to and its revision when proposed (0 = absent). */
  base: { bucket: string; key: string; revision: number };
  /** One line for lists and audit. */
  summary: string;
  /** Line diff of the state before and after (see textdiff.ts). */
  diff: string;
  createdAt: number;
  decidedBy?: string;
  decidedAt?: number;
  /** Why it was rejected, went stale or failed; or the approver's note. */
  note?: string;
  /** What applying produced (never a token secret): {tokenId} or {revoked: [...]} or {updatedAt}. */
  result?: unknown;
}

/** What approvals audit; the sink stamps the envelope and publishes. Must not throw. */
export type ApprovalAuditDraft =
  | { type: 'approval.proposed'; namespace: string; approvalId: string; kind: string; by: string; summary?: string }
  | { type: 'approval.decided'; namespace: string; approvalId: string; kind: string; by: string; decision: 'approved' | 'rejected' | 'stale' | 'failed'; reason?: string };

/** The parts of ControlPlaneService approvals apply through. */
export interface ApprovalTargets {
  /** `by`: recorded in the `token.created` audit event (the approver). */
  createToken(body: unknown, by?: string): Promise<{ token: string; record: TokenRecord }>;
  revokeAgentTree(namespace: string, name: string, reason?: string): Promise<{ revoked: { name: string; namespace: string }; children: { name: string; namespace: string }[] }>;
  readonly routes: { decide(op: 'approve', namespace: string, name: string, body: { cidr: string; by: string }): Promise<unknown> };
}

export interface ApprovalsOptions {
  bucket: KvBucket;
  policies: KvBucket;
  agents: KvBucket;
  /** Agents' egress requests (egress.ts EGRESS_BUCKET), for approve-egress. */
  egress: KvBucket;
  targets: ApprovalTargets;
  /** Throws with a one-line message when a policy document is invalid. */
  validatePolicy: (p: unknown) => void;
  clock: Clock;
  audit: (e: ApprovalAuditDraft) => Promise<void> | void;
}

/** Approving or rejecting something that is no longer pending, applying over a moved base, or approving one's own proposal. */
export class ApprovalConflictError extends LatticeError {
  override readonly name = 'ApprovalConflictError';
  constructor(
    code: 'EAPPROVAL_NOT_PENDING' | 'EAPPROVAL_STALE' | 'EAPPROVAL_APPLY_FAILED' | 'EAPPROVAL_SELF',
    message: string,
    readonly approval: ApprovalRecord,
  ) {
    super(code, message);
  }
}

const NAME_RE = /^[\x20-\x7e]{1,128}$/;
const ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const key = (id: string) => `c.${id}`;

/** A caller-given name (proposer, approver): printable ASCII, 1-128 characters. */
function parseWho(v: unknown, what: string, fallback?: string): string {
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'string' || !NAME_RE.test(v)) throw badRequest(`${what} must be 1-128 printable ASCII characters`);
  return v;
}

function parseNote(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.length > 1000) throw badRequest('reason/note must be a string of at most 1000 characters');
  return v;
}

/**
 * Pending changes that wait for a human (KV `lattice_approvals`): propose stores a validated change with
 * its diff and the revision it was based on; approve claims it by compare-and-set and applies it only if
 * that base has not moved (else `EAPPROVAL_STALE`, HTTP 409); reject ends it. Every step is audited.
 */
export class Approvals {
  constructor(private readonly o: ApprovalsOptions) {}

  /** Validate and store a proposal. Body: {kind, namespace, name?, policy?, token?, proposer, reason?}. */
  async propose(body: unknown): Promise<ApprovalRecord> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('proposal must be a JSON object');
    const b = body as Record<string, unknown>;
    const proposer = parseWho(b.proposer, 'proposer');
    const reason = parseNote(b.reason);
    const kind = b.kind;
    const now = this.o.clock.now();
    const id = randomUUID();
    let rec: ApprovalRecord;
    if (kind === ChangeKind.SetPolicy) {
      const ns = b.namespace;
      if (!isLabel(ns)) throw badRequest('namespace must be a DNS label');
      const policy = b.policy;
      if (typeof policy !== 'object' || policy === null || Array.isArray(policy)) throw badRequest('policy must be a JSON object');
      this.o.validatePolicy(policy);
      const cur = await getJson<NamespacePolicyRecord>(this.o.policies, ns);
      rec = this.record(id, kind, ns, undefined, proposer, reason, policy, { bucket: this.o.policies.name, key: ns, revision: cur?.revision ?? 0 }, now);
      rec.summary = `set the network policy of namespace ${ns}${cur ? '' : ' (none set yet)'}`;
      rec.diff = lineDiff(prettyJson(cur?.value.policy), prettyJson(policy));
    } else if (kind === ChangeKind.RevokeAgent) {
      const ns = b.namespace;
      const name = b.name;
      if (!isLabel(ns) || !isLabel(name)) throw badRequest('namespace and name must be DNS labels');
      const cur = await getJson<AgentRecord>(this.o.agents, agentKey(ns, name));
      if (!cur) throw new ControlPlaneError(CpErrorCode.NotFound, `no agent ${name} in namespace ${ns}`);
      rec = this.record(id, kind, ns, name, proposer, reason, null, { bucket: this.o.agents.name, key: agentKey(ns, name), revision: cur.revision }, now);
      rec.summary = `revoke agent ${ns}/${name} (and the agents it delegated to)`;
      const a = cur.value;
      rec.diff = lineDiff(prettyJson({ agent: `${ns}/${name}`, agentId: a.agentId, status: a.status, ipv4: a.address?.ipv4, ipv6: a.address?.ipv6 }), '');
    } else if (kind === ChangeKind.CreateToken) {
      const req = b.token;
      // Validated now with the same rules as POST .../enrollment-tokens (the record is thrown away).
      const t = buildTokenRecord(req, now, id, (p) => this.o.validatePolicy(p));
      rec = this.record(id, kind, t.namespace, undefined, proposer, reason, req, { bucket: '', key: '', revision: 0 }, now);
      rec.summary = `create an enrollment token for namespace ${t.namespace} (limit ${t.limit})`;
      rec.diff = lineDiff('', prettyJson(req));
    } else if (kind === ChangeKind.ApproveEgress) {
      const ns = b.namespace;
      const requestId = b.requestId;
      if (!isLabel(ns)) throw badRequest('namespace must be a DNS label');
      if (typeof requestId !== 'string' || !ID_RE.test(requestId)) throw badRequest('requestId must be the UUID of an egress request');
      const req = await getJson<EgressRequestRecord>(this.o.egress, egressRequestKey(ns, requestId));
      if (!req) throw new ControlPlaneError(CpErrorCode.NotFound, `no egress request ${requestId} in namespace ${ns}`);
      if (req.value.status !== EgressRequestStatus.Pending) throw badRequest(`egress request ${requestId} is ${req.value.status}, not pending`);
      const r = req.value;
      const rule = minimalAllowRule(parseIp(r.host) ? { address: r.host, port: r.port, proto: r.proto } : { host: r.host, port: r.port, proto: r.proto });
      const cur = await getJson<NamespacePolicyRecord>(this.o.policies, ns);
      const before = (cur?.value.policy ?? { version: 1 }) as { egress?: unknown[] };
      const policy = { ...before, egress: [...(Array.isArray(before.egress) ? before.egress : []), rule] };
      this.o.validatePolicy(policy);
      rec = this.record(id, kind, ns, r.name, proposer, reason, { requestId, ruleId: rule.id, policy }, { bucket: this.o.policies.name, key: ns, revision: cur?.revision ?? 0 }, now);
      rec.summary = `allow ${r.proto} ${r.host}:${r.port} in namespace ${ns} (egress request of ${r.name}: rule ${rule.id})`;
      rec.diff = lineDiff(prettyJson(cur?.value.policy), prettyJson(policy));
    } else if (kind === ChangeKind.ApproveRoute) {
      const ns = b.namespace;
      const name = b.name;
      if (!isLabel(ns) || !isLabel(name)) throw badRequest('namespace and name must be DNS labels');
      const cidrs = routeArg(b.cidr);
      const cur = await getJson<AgentRecord>(this.o.agents, agentKey(ns, name));
      if (!cur) throw new ControlPlaneError(CpErrorCode.NotFound, `no agent ${name} in namespace ${ns}`);
      const routes = cur.value.routes ?? [];
      const missing = cidrs.filter((c) => !routes.some((r) => r.cidr === c));
      if (missing.length) throw new ControlPlaneError(CpErrorCode.NotFound, `agent ${ns}/${name} does not advertise ${missing.join(', ')}; see list_routes`);
      const change = { cidr: b.cidr === 'exit' ? 'exit' : cidrs[0], publicKey: cur.value.publicKey };
      rec = this.record(id, kind, ns, name, proposer, reason, change, { bucket: this.o.agents.name, key: agentKey(ns, name), revision: cur.revision }, now);
      rec.summary = `approve route ${cidrs.join(', ')} of ${ns}/${name}${b.cidr === 'exit' ? ' (exit node)' : ''}`;
      const before = routes.filter((r) => cidrs.includes(r.cidr)).map((r) => `${r.cidr}: ${r.state}`).join('\n');
      rec.diff = lineDiff(before, cidrs.map((c) => `${c}: approved`).join('\n'));
    } else {
      throw badRequest(`kind must be one of ${Object.values(ChangeKind).join(', ')}`);
    }
    if ((await this.o.bucket.keys('c.*')).length >= MAX_PENDING) {
      const pending = (await this.list(ApprovalStatus.Pending)).length;
      if (pending >= MAX_PENDING) throw new ControlPlaneError(CpErrorCode.Busy, `${pending} changes already wait for approval; decide some first`);
    }
    await this.o.bucket.create(key(id), encodeJson(rec));
    await this.o.audit({ type: 'approval.proposed', namespace: rec.namespace, approvalId: id, kind: rec.kind, by: proposer, summary: rec.summary });
    return rec;
  }

  private record(
    id: string,
    kind: ChangeKind,
    namespace: string,
    name: string | undefined,
    proposer: string,
    reason: string | undefined,
    change: unknown,
    base: ApprovalRecord['base'],
    now: number,
  ): ApprovalRecord {
    return {
      id,
      kind,
      status: ApprovalStatus.Pending,
      namespace,
      ...(name !== undefined ? { name } : {}),
      proposer,
      ...(reason !== undefined ? { reason } : {}),
      change,
      base,
      summary: '',
      diff: '',
      createdAt: now,
    };
  }

  async get(id: string): Promise<ApprovalRecord> {
    if (!ID_RE.test(id)) throw badRequest('approval id must be a UUID');
    const e = await getJson<ApprovalRecord>(this.o.bucket, key(id));
    if (!e) throw new ControlPlaneError(CpErrorCode.NotFound, `no approval ${id}`);
    return e.value;
  }

  /** All approvals (or those in `status`), oldest first. */
  async list(status?: string): Promise<ApprovalRecord[]> {
    if (status !== undefined && !(Object.values(ApprovalStatus) as string[]).includes(status)) {
      throw badRequest(`status must be one of ${Object.values(ApprovalStatus).join(', ')}`);
    }
    const keys = await this.o.bucket.keys('c.*');
    const recs = await Promise.all(keys.map((k) => this.o.bucket.get(k)));
    return recs
      .filter((e) => e !== null)
      .map((e) => decodeJson<ApprovalRecord>(e.value))
      .filter((r) => status === undefined || r.status === status)
      .sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
  }

  /**
   * Approve and apply. Returns the final record and, for create-token, the token secret (shown once).
   * ApprovalConflictError EAPPROVAL_NOT_PENDING when already decided, EAPPROVAL_STALE when the base moved (recorded as stale).
   */
  async approve(id: string, body: unknown): Promise<{ approval: ApprovalRecord; token?: string }> {
    const { by, note } = parseDecision(body);
    const claimed = await this.transition(id, (r) => {
      if (r.proposer === by) throw new ApprovalConflictError('EAPPROVAL_SELF', `approval ${id} was proposed by ${by}, who may not approve it too; another approver must (lattice admin user add NAME --role approver)`, r);
      return { ...r, status: ApprovalStatus.Applying, decidedBy: by, decidedAt: this.o.clock.now(), ...(note ? { note } : {}) };
    });
    const rec = claimed.value;
    let outcome: { status: ApprovalStatus; note?: string; result?: unknown; token?: string };
    try {
      outcome = await this.apply(rec);
    } catch (err) {
      outcome = { status: ApprovalStatus.Failed, note: (err as Error).message.split('\n')[0] };
    }
    const final: ApprovalRecord = {
      ...rec,
      status: outcome.status,
      ...(outcome.note !== undefined ? { note: outcome.note } : {}),
      ...(outcome.result !== undefined ? { result: outcome.result } : {}),
    };
    await this.o.bucket.update(key(id), encodeJson(final), claimed.revision);
    const decision = outcome.status === ApprovalStatus.Approved ? 'approved' : outcome.status === ApprovalStatus.Stale ? 'stale' : 'failed';
    await this.o.audit({ type: 'approval.decided', namespace: rec.namespace, approvalId: id, kind: rec.kind, by, decision, ...(outcome.note ? { reason: outcome.note } : {}) });
    if (outcome.status === ApprovalStatus.Stale) throw new ApprovalConflictError('EAPPROVAL_STALE', `approval ${id} not applied: ${outcome.note}`, final);
    if (outcome.status === ApprovalStatus.Failed) throw new ApprovalConflictError('EAPPROVAL_APPLY_FAILED', `approval ${id} not applied: ${outcome.note}`, final);
    return { approval: final, ...(outcome.token ? { token: outcome.token } : {}) };
  }

  async reject(id: string, body: unknown): Promise<ApprovalRecord> {
    const { by, note } = parseDecision(body);
    const done = await this.transition(id, (r) => ({ ...r, status: ApprovalStatus.Rejected, decidedBy: by, decidedAt: this.o.clock.now(), ...(note ? { note } : {}) }));
    await this.o.audit({ type: 'approval.decided', namespace: done.value.namespace, approvalId: id, kind: done.value.kind, by, decision: 'rejected', ...(note ? { reason: note } : {}) });
    return done.value;
  }

  /** pending -> next, with compare-and-set on the approval record. */
  private async transition(id: string, next: (r: ApprovalRecord) => ApprovalRecord): Promise<{ value: ApprovalRecord; revision: number }> {
    if (!ID_RE.test(id)) throw badRequest('approval id must be a UUID');
    for (;;) {
      const cur = await getJson<ApprovalRecord>(this.o.bucket, key(id));
      if (!cur) throw new ControlPlaneError(CpErrorCode.NotFound, `no approval ${id}`);
      if (cur.value.status !== ApprovalStatus.Pending) {
        throw new ApprovalConflictError('EAPPROVAL_NOT_PENDING', `approval ${id} is ${cur.value.status}, not pending`, cur.value);
      }
      const value = next(cur.value);
      try {
        return { value, revision: await this.o.bucket.update(key(id), encodeJson(value), cur.revision) };
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err;
      }
    }
  }

  private async apply(rec: ApprovalRecord): Promise<{ status: ApprovalStatus; note?: string; result?: unknown; token?: string }> {
    const stale = (what: string) => ({ status: ApprovalStatus.Stale, note: `${what} changed since the proposal (base revision ${rec.base.revision}); propose it again against the current state` });
    switch (rec.kind) {
      case ChangeKind.SetPolicy:
      case ChangeKind.ApproveEgress: {
        const egress = rec.kind === ChangeKind.ApproveEgress ? (rec.change as { requestId: string; ruleId: string; policy: unknown }) : undefined;
        const policy = egress ? egress.policy : rec.change;
        this.o.validatePolicy(policy);
        const now = this.o.clock.now();
        const doc: NamespacePolicyRecord = { namespace: rec.namespace, policy, updatedAt: now };
        try {
          if (rec.base.revision === 0) await this.o.policies.create(rec.namespace, encodeJson(doc));
          else await this.o.policies.update(rec.namespace, encodeJson(doc), rec.base.revision);
        } catch (err) {
          if (err instanceof KvConflictError) return stale(`the policy of namespace ${rec.namespace}`);
          throw err;
        }
        if (egress) await this.markEgressApproved(rec, egress.requestId, egress.ruleId);
        return { status: ApprovalStatus.Approved, result: { updatedAt: new Date(now).toISOString(), ...(egress ? { ruleId: egress.ruleId } : {}) } };
      }
      case ChangeKind.RevokeAgent: {
        const cur = await this.o.agents.get(rec.base.key);
        if (!cur || cur.revision !== rec.base.revision) return stale(`agent ${rec.namespace}/${rec.name}`);
        const r = await this.o.targets.revokeAgentTree(rec.namespace, rec.name!, `revoked by approval ${rec.id}`);
        return { status: ApprovalStatus.Approved, result: { revoked: [r.revoked, ...r.children].map((a) => `${a.namespace}/${a.name}`) } };
      }
      case ChangeKind.CreateToken: {
        const { token, record } = await this.o.targets.createToken(rec.change, rec.decidedBy ?? 'admin');
        return { status: ApprovalStatus.Approved, result: { tokenId: record.id }, token };
      }
      case ChangeKind.ApproveRoute: {
        const change = rec.change as { cidr: string; publicKey: string };
        const cidrs = routeArg(change.cidr);
        const cur = await getJson<AgentRecord>(this.o.agents, rec.base.key);
        const routes = cur?.value.routes ?? [];
        if (!cur || cur.value.publicKey !== change.publicKey || !cidrs.every((c) => routes.some((r) => r.cidr === c && r.state !== 'approved'))) {
          return stale(`route ${cidrs.join(', ')} of agent ${rec.namespace}/${rec.name}`);
        }
        await this.o.targets.routes.decide('approve', rec.namespace, rec.name!, { cidr: change.cidr, by: rec.decidedBy ?? 'admin' });
        return { status: ApprovalStatus.Approved, result: { approved: cidrs } };
      }
    }
  }

  /** The policy is applied already: record on the request that it was approved (compare-and-set; a lost race is retried). */
  private async markEgressApproved(rec: ApprovalRecord, requestId: string, ruleId: string): Promise<void> {
    const k = egressRequestKey(rec.namespace, requestId);
    for (;;) {
      const cur = await getJson<EgressRequestRecord>(this.o.egress, k);
      if (!cur) return; // cleared meanwhile: the rule stands, there is nothing to mark
      try {
        await this.o.egress.update(k, encodeJson({ ...cur.value, status: EgressRequestStatus.Approved, approval: { id: rec.id, ruleId } }), cur.revision);
        return;
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err;
      }
    }
  }
}

function parseDecision(body: unknown): { by: string; note?: string } {
  const b = (body ?? {}) as Record<string, unknown>;
  if (typeof b !== 'object' || Array.isArray(b)) throw badRequest('decision must be a JSON object {by?, note?}');
  return { by: parseWho(b.by, 'by', 'admin'), note: parseNote(b.note) };
}
