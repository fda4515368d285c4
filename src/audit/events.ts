import { v7 as uuidv7 } from 'uuid';
import { PolicyMode } from '../policy/schema.js';

/**
 * The audit event schema, version 1. One JSON object per event; `type` discriminates the union.
 *
 * Every event carries the same envelope: a unique time-ordered `id` (UUIDv7 layout, also the JetStream
 * message id, so the server drops replays), a per-launcher `seq` that increases by one per recorded
 * event and survives restarts (gaps reveal loss), the `launcherId`, optional `agentId`/`namespace`,
 * and an ISO-8601 `ts`. Events reach the control plane from launchers, so the control plane treats
 * them as untrusted: `validateAuditEvent` checks every field and rejects unknown ones.
 */
export const AUDIT_EVENT_VERSION = 1 as const;

export const AuditEventType = {
  SandboxCreated: 'sandbox.created',
  SandboxStarted: 'sandbox.started',
  SandboxExited: 'sandbox.exited',
  SandboxStopped: 'sandbox.stopped',
  FlowOpened: 'flow.opened',
  FlowClosed: 'flow.closed',
  DnsAnswered: 'dns.answered',
  DnsRefused: 'dns.refused',
  PolicyApplied: 'policy.applied',
  ToolSpan: 'tool.span',
  EnrollmentEnrolled: 'enrollment.enrolled',
  EnrollmentRevoked: 'enrollment.revoked',
  ApprovalProposed: 'approval.proposed',
  ApprovalDecided: 'approval.decided',
  RouteChanged: 'route.changed',
  PolicySet: 'policy.set',
  TokenCreated: 'token.created',
  LabelsChanged: 'labels.changed',
  UserChanged: 'user.changed',
  NamespaceExitNode: 'namespace.exit-node',
} as const;
export type AuditEventType = (typeof AuditEventType)[keyof typeof AuditEventType];

export const FlowVerdict = { Allowed: 'allowed', Denied: 'denied', WouldDeny: 'would-deny' } as const;
export type FlowVerdict = (typeof FlowVerdict)[keyof typeof FlowVerdict];

export const ToolDecision = { Allow: 'allow', Deny: 'deny', WouldDeny: 'would-deny' } as const;
export type ToolDecision = (typeof ToolDecision)[keyof typeof ToolDecision];

export const SpanStatus = { Ok: 'ok', Error: 'error', Denied: 'denied' } as const;
export type SpanStatus = (typeof SpanStatus)[keyof typeof SpanStatus];

export const FlowDirection = { Egress: 'egress', Ingress: 'ingress' } as const;
export type FlowDirection = (typeof FlowDirection)[keyof typeof FlowDirection];

export const FlowProto = { Tcp: 'tcp', Udp: 'udp', Icmp: 'icmp', Icmpv6: 'icmpv6' } as const;
export type FlowProto = (typeof FlowProto)[keyof typeof FlowProto];

/** The envelope every event carries. */
export interface AuditEnvelope {
  v: typeof AUDIT_EVENT_VERSION;
  id: string;
  seq: number;
  launcherId: string;
  agentId?: string;
  namespace?: string;
  ts: string;
}

/** The 5-tuple of a flow, as seen from the sandbox. */
export interface FiveTuple {
  proto: FlowProto;
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
}

export interface SandboxCreated { type: 'sandbox.created'; sandboxId: string; image?: string }
export interface SandboxStarted { type: 'sandbox.started'; sandboxId: string; pid?: number }
export interface SandboxExited { type: 'sandbox.exited'; sandboxId: string; code: number; signal?: string; /** 'oom' | 'pids-limit' when a host limit stopped it. */ reason?: string }
export interface SandboxStopped { type: 'sandbox.stopped'; sandboxId: string; reason?: string }
export interface FlowOpened extends FiveTuple {
  type: 'flow.opened';
  flowId: string;
  sandboxId?: string;
  direction: FlowDirection;
  verdict: FlowVerdict;
  ruleId?: string;
  /** For people: why a denial happened when the rule id alone does not say (e.g. the peer's other family). */
  note?: string;
}
export interface FlowClosed extends FiveTuple {
  type: 'flow.closed';
  flowId: string;
  sandboxId?: string;
  direction: FlowDirection;
  bytesOut: number;
  bytesIn: number;
  packetsOut: number;
  packetsIn: number;
  durationMs: number;
}
export interface DnsAnswered { type: 'dns.answered'; sandboxId?: string; name: string; qtype: string; answers: string[]; ruleId?: string }
export interface DnsRefused { type: 'dns.refused'; sandboxId?: string; name: string; qtype: string; reason: string; ruleId?: string }
export interface PolicyApplied { type: 'policy.applied'; sandboxId?: string; policyId: string; policyVersion: number; mode: PolicyMode; rules: number }
export interface ToolSpan {
  type: 'tool.span';
  agentId: string;
  namespace: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  tool: string;
  status: SpanStatus;
  decision: ToolDecision;
  durationMs: number;
  /** When the call started (ts is when it was recorded, i.e. when it ended). */
  startTs?: string;
  reason?: string;
}
export interface EnrollmentEnrolled { type: 'enrollment.enrolled'; enrollmentId: string; overlayIp?: string; parentAgentId?: string; expiresAt?: string }
export interface EnrollmentRevoked { type: 'enrollment.revoked'; enrollmentId: string; reason?: string }
/** A pending change was proposed (src/controlplane/approvals.ts); `by` is the proposer as it named itself. */
export interface ApprovalProposed { type: 'approval.proposed'; approvalId: string; kind: string; by: string; summary?: string }
/** A pending change was decided: approved (and applied), rejected, or refused because its base moved (stale). */
export interface ApprovalDecided { type: 'approval.decided'; approvalId: string; kind: string; by: string; decision: 'approved' | 'rejected' | 'stale' | 'failed'; reason?: string }

/** A route was advertised, approved, rejected or withdrawn (src/controlplane/routes.ts). */
export interface RouteChanged { type: 'route.changed'; cidr: string; change: 'advertised' | 'approved' | 'rejected' | 'withdrawn'; by: string }

/**
 * Operators' changes outside approvals (src/controlplane/api.ts, admins.ts): `by` is the verified admin user
 * ("root" for the root token, "local" for a call inside the control plane's own process), or
 * "agent:<name>" for a delegation. Approved changes are recorded as `approval.decided` as well.
 */
/** A namespace's policy was replaced; `policyHash` "sha256:<hex>" of its JSON text as stored, `rules` its rule count. */
export interface PolicySet { type: 'policy.set'; policyHash: string; rules: number; by: string }
/** An enrollment token was created (never the secret): its id, use limit and expiry. */
export interface TokenCreated { type: 'token.created'; tokenId: string; limit: number; expiresAt: string; by: string }
/** An agent's labels after an operator's edit, as "key=value". */
export interface LabelsChanged { type: 'labels.changed'; labels: string[]; by: string }
/** An admin user was added (with its role), given another role, or removed. */
export interface UserChanged { type: 'user.changed'; user: string; change: 'added' | 'role' | 'removed'; role?: string; by: string }
/** A namespace's default exit node set (exitNode "" when cleared) by an operator (controlplane/namespaces.ts). */
export interface NamespaceExitNode { type: 'namespace.exit-node'; exitNode: string; optOut: 'allowed' | 'refused'; by: string }

export type AuditEventBody =
  | SandboxCreated | SandboxStarted | SandboxExited | SandboxStopped
  | FlowOpened | FlowClosed | DnsAnswered | DnsRefused | PolicyApplied
  | ToolSpan | EnrollmentEnrolled | EnrollmentRevoked | ApprovalProposed | ApprovalDecided | RouteChanged
  | PolicySet | TokenCreated | LabelsChanged | UserChanged | NamespaceExitNode;

export type AuditEvent = AuditEnvelope & AuditEventBody;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** What a producer hands to the outbox: the outbox fills in v, id, seq, launcherId and ts. */
export type AuditEventDraft = DistributiveOmit<AuditEvent, 'v' | 'id' | 'seq' | 'launcherId' | 'ts'> & { ts?: string };

// ---------------------------------------------------------------------------------------------
// Identifiers

/**
 * A UUIDv7 (RFC 9562 section 5.7): 48-bit unix milliseconds `nowMs`, version 7, variant 10, random rest,
 * from the `uuid` package. Sorts by creation time (to the millisecond). Default `nowMs`: the wall clock,
 * with `uuid`'s per-process counter keeping ids in creation order within one millisecond.
 */
export function newEventId(nowMs?: number): string {
  return nowMs === undefined ? uuidv7() : uuidv7({ msecs: nowMs });
}

/** Tokens that appear in NATS subjects (namespace, agentId, launcherId): no dots, wildcards or spaces. */
export const TOKEN_RE = /^[A-Za-z0-9_-]{1,64}$/;
const ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const MAX_STR = 512;
const MAX_ANSWERS = 64;

/** Subject an event is published on: lattice.audit.<namespace|_>.<agentId|_>.<type>. */
export const AUDIT_SUBJECT_PREFIX = 'lattice.audit';
/** The subject `ev` is published on (see AUDIT_SUBJECT_PREFIX); absent namespace or agent is `_`. */
export function auditSubject(ev: Pick<AuditEvent, 'namespace' | 'agentId' | 'type'>): string {
  return `${AUDIT_SUBJECT_PREFIX}.${ev.namespace ?? '_'}.${ev.agentId ?? '_'}.${ev.type}`;
}

// ---------------------------------------------------------------------------------------------
// Validation: a small table per type. Unknown fields are rejected so nothing unvetted is stored.

type FieldKind =
  | 'token' | 'id' | 'str' | 'iso' | 'ip' | 'port' | 'uint' | 'int' | 'strs'
  | readonly string[];
interface FieldSpec { kind: FieldKind; optional?: boolean }
const req = (kind: FieldKind): FieldSpec => ({ kind });
const opt = (kind: FieldKind): FieldSpec => ({ kind, optional: true });

const ENVELOPE: Record<string, FieldSpec> = {
  v: req('uint'),
  type: req('str'),
  id: req('id'),
  seq: req('uint'),
  launcherId: req('token'),
  agentId: opt('token'),
  namespace: opt('token'),
  ts: req('iso'),
};
const TUPLE: Record<string, FieldSpec> = {
  proto: req(Object.values(FlowProto)),
  srcIp: req('ip'),
  srcPort: req('port'),
  dstIp: req('ip'),
  dstPort: req('port'),
};
const BODIES: Record<AuditEventType, Record<string, FieldSpec>> = {
  'sandbox.created': { sandboxId: req('id'), image: opt('str') },
  'sandbox.started': { sandboxId: req('id'), pid: opt('uint') },
  'sandbox.exited': { sandboxId: req('id'), code: req('int'), signal: opt('str'), reason: opt('str') },
  'sandbox.stopped': { sandboxId: req('id'), reason: opt('str') },
  'flow.opened': {
    ...TUPLE, flowId: req('id'), sandboxId: opt('id'), direction: req(Object.values(FlowDirection)),
    verdict: req(Object.values(FlowVerdict)), ruleId: opt('id'), note: opt('str'),
  },
  'flow.closed': {
    ...TUPLE, flowId: req('id'), sandboxId: opt('id'), direction: req(Object.values(FlowDirection)),
    bytesOut: req('uint'), bytesIn: req('uint'), packetsOut: req('uint'), packetsIn: req('uint'), durationMs: req('uint'),
  },
  'dns.answered': { sandboxId: opt('id'), name: req('str'), qtype: req('str'), answers: req('strs'), ruleId: opt('id') },
  'dns.refused': { sandboxId: opt('id'), name: req('str'), qtype: req('str'), reason: req('str'), ruleId: opt('id') },
  'policy.applied': {
    sandboxId: opt('id'), policyId: req('id'), policyVersion: req('uint'), mode: req(Object.values(PolicyMode)), rules: req('uint'),
  },
  'tool.span': {
    agentId: req('token'), namespace: req('token'), traceId: req('id'), spanId: req('id'), parentSpanId: opt('id'),
    tool: req('id'), status: req(Object.values(SpanStatus)), decision: req(Object.values(ToolDecision)),
    durationMs: req('uint'), startTs: opt('iso'), reason: opt('str'),
  },
  'enrollment.enrolled': { enrollmentId: req('id'), overlayIp: opt('ip'), parentAgentId: opt('token'), expiresAt: opt('iso') },
  'enrollment.revoked': { enrollmentId: req('id'), reason: opt('str') },
  'approval.proposed': { approvalId: req('id'), kind: req('id'), by: req('str'), summary: opt('str') },
  'approval.decided': {
    approvalId: req('id'), kind: req('id'), by: req('str'), decision: req(['approved', 'rejected', 'stale', 'failed']), reason: opt('str'),
  },
  'route.changed': { cidr: req('str'), change: req(['advertised', 'approved', 'rejected', 'withdrawn']), by: req('str') },
  'policy.set': { policyHash: req('id'), rules: req('uint'), by: req('str') },
  'token.created': { tokenId: req('id'), limit: req('uint'), expiresAt: req('iso'), by: req('str') },
  'labels.changed': { labels: req('strs'), by: req('str') },
  'user.changed': { user: req('token'), change: req(['added', 'role', 'removed']), role: opt('str'), by: req('str') },
  'namespace.exit-node': { exitNode: req('str'), optOut: req(['allowed', 'refused']), by: req('str') },
};

export type ValidationResult = { ok: true; event: AuditEvent } | { ok: false; reason: string };

function isIp(s: string): boolean {
  if (s.length > 45) return false;
  if (/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(s)) return s.split('.').every((p) => Number(p) <= 255);
  return s.includes(':') && /^[0-9A-Fa-f:.]+$/.test(s);
}

function checkField(value: unknown, kind: FieldKind): boolean {
  if (Array.isArray(kind)) return typeof value === 'string' && kind.includes(value);
  switch (kind) {
    case 'token': return typeof value === 'string' && TOKEN_RE.test(value);
    case 'id': return typeof value === 'string' && ID_RE.test(value);
    case 'str': return typeof value === 'string' && value.length <= MAX_STR;
    case 'iso': return typeof value === 'string' && ISO_RE.test(value) && !Number.isNaN(Date.parse(value));
    case 'ip': return typeof value === 'string' && isIp(value);
    case 'port': return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 65535;
    case 'uint': return Number.isSafeInteger(value) && (value as number) >= 0;
    case 'int': return Number.isSafeInteger(value);
    case 'strs':
      return Array.isArray(value) && value.length <= MAX_ANSWERS && value.every((x) => typeof x === 'string' && x.length <= MAX_STR);
  }
  return false;
}

// Per type: every allowed field with its spec, and the required ones (computed once).
const SCHEMAS = new Map<string, { fields: Map<string, FieldSpec>; required: string[] }>(
  Object.entries(BODIES).map(([type, body]) => {
    const fields = new Map<string, FieldSpec>([...Object.entries(ENVELOPE), ...Object.entries(body)]);
    return [type, { fields, required: [...fields].filter(([, f]) => !f.optional).map(([k]) => k) }];
  }),
);

/** Check an untrusted value against the v1 schema. Never throws. */
export function validateAuditEvent(input: unknown): ValidationResult {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return { ok: false, reason: 'not an object' };
  const o = input as Record<string, unknown>;
  if (o.v !== AUDIT_EVENT_VERSION) return { ok: false, reason: `unsupported version ${String(o.v).slice(0, 16)}` };
  const schema = typeof o.type === 'string' ? SCHEMAS.get(o.type) : undefined;
  if (!schema) return { ok: false, reason: 'unknown type' };
  for (const key in o) {
    const spec = schema.fields.get(key);
    if (!spec) return { ok: false, reason: `unknown field ${key.slice(0, 32)}` };
    const value = o[key];
    if (value === undefined && spec.optional) continue;
    if (!checkField(value, spec.kind)) return { ok: false, reason: `bad field ${key}` };
  }
  for (const key of schema.required) {
    if (o[key] === undefined) return { ok: false, reason: `missing field ${key}` };
  }
  if ((o.seq as number) < 1) return { ok: false, reason: 'bad field seq' };
  return { ok: true, event: o as unknown as AuditEvent };
}

/** Parse and validate a published payload; garbage yields a reason, never an exception. */
export function parseAuditEvent(bytes: Uint8Array | string): ValidationResult {
  let value: unknown;
  try {
    value = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    return { ok: false, reason: 'not JSON' };
  }
  return validateAuditEvent(value);
}
