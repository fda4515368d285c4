import { randomBytes } from 'node:crypto';
import { LatticeError } from '../errors.js';
import { SpanStatus, ToolDecision, type AuditEventDraft, type ToolSpan } from '../audit/events.js';
import { EnforcementMode, ToolName } from '../controlplane/types.js';

/**
 * ExecuteTool: the one path every agent tool call takes.
 *
 *   request -> trace context (continue the agent's W3C traceparent, else start a trace)
 *           -> decide (pure): identity expired? revoked? target namespace allowed? tool allowed?
 *           -> deny (403) | would-deny (audit: proceed) | allow
 *           -> tool implementation (injected)
 *           -> tool.span recorded through the injected sink (always; the reply waits for it)
 *
 * Expired and revoked identities are refused in every mode: there is no one left to audit as.
 * A namespace or tool outside the identity's grants is refused in enforce mode and recorded as
 * would-deny (then run) in audit and disabled modes, except a tool that grants authority
 * (AUTHORITY_TOOLS: delegate), which is refused in every mode.
 */

export { ToolName };

/** Tools that grant authority: refused without the grant in every enforcement mode (decideToolCall). */
export const AUTHORITY_TOOLS: ReadonlySet<string> = new Set<string>([ToolName.Delegate]);

export const DenyReason = {
  Expired: 'identity expired',
  Revoked: 'identity revoked',
  Namespace: 'namespace not allowed',
  Tool: 'tool not allowed',
} as const;
export type DenyReason = (typeof DenyReason)[keyof typeof DenyReason];

/** Who the agent is: fixed by the launcher when it serves the socket, never taken from a request. */
export interface AgentIdentity {
  agentId: string;
  name?: string;
  namespace: string;
  /** The agent's JWT, used by the launcher towards the control plane; never shown to the agent. */
  jwt: string;
  /** Epoch ms. */
  jwtExpiresAt: number;
  allowedTools: readonly string[];
  allowedNamespaces: readonly string[];
  enforcement: EnforcementMode;
}

export interface Decision {
  decision: ToolDecision;
  /** Whether the tool runs. */
  proceed: boolean;
  reason?: DenyReason;
}

/** The pure decision for one call at `now`. `namespace` is the namespace the call targets. */
export function decideToolCall(
  id: Pick<AgentIdentity, 'namespace' | 'jwtExpiresAt' | 'allowedTools' | 'allowedNamespaces' | 'enforcement'>,
  call: { tool: string; namespace: string },
  now: number,
  revoked: boolean,
): Decision {
  if (revoked) return { decision: ToolDecision.Deny, proceed: false, reason: DenyReason.Revoked };
  if (now >= id.jwtExpiresAt) return { decision: ToolDecision.Deny, proceed: false, reason: DenyReason.Expired };
  let violation: DenyReason | undefined;
  if (call.namespace !== id.namespace && !id.allowedNamespaces.includes(call.namespace)) violation = DenyReason.Namespace;
  else if (!id.allowedTools.includes(call.tool)) violation = DenyReason.Tool;
  if (!violation) return { decision: ToolDecision.Allow, proceed: true };
  // A tool that hands out authority (delegate mints enrollment tokens) is never run without its grant:
  // audit and disabled modes observe, they do not widen what an agent may give away.
  if (id.enforcement === EnforcementMode.Enforce || AUTHORITY_TOOLS.has(call.tool)) return { decision: ToolDecision.Deny, proceed: false, reason: violation };
  return { decision: ToolDecision.WouldDeny, proceed: true, reason: violation };
}

// ---- W3C trace context (https://www.w3.org/TR/trace-context/#traceparent-header) ----

export interface TraceContext {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
}

const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** trace-id and parent-id of a traceparent header, or null when it is absent or malformed (then a new trace starts). */
export function parseTraceparent(h: string | undefined): { traceId: string; parentId: string } | null {
  if (!h || h.length > 512) return null;
  const m = TRACEPARENT_RE.exec(h.trim());
  if (!m) return null;
  const [, version, traceId, parentId] = m;
  if (version === 'ff') return null;
  if (version === '00' && m[5] !== undefined) return null; // version 00 has exactly four fields
  if (/^0+$/.test(traceId) || /^0+$/.test(parentId)) return null;
  return { traceId, parentId };
}

/** The W3C Trace Context `traceparent` header (version 00) of `t`. */
export function formatTraceparent(t: TraceContext): string {
  return `00-${t.traceId}-${t.spanId}-01`;
}

const randomHex = (bytes: number) => randomBytes(bytes).toString('hex');

/** The trace of a call: the caller's trace id from a valid `traceparent` (else a new one), and a new span id. */
export function traceFor(traceparent: string | undefined, rand: (bytes: number) => string = randomHex): TraceContext {
  const p = parseTraceparent(traceparent);
  const spanId = rand(8);
  return p ? { traceId: p.traceId, spanId, parentSpanId: p.parentId } : { traceId: rand(16), spanId };
}

// ---- execution ----

/** A tool refused its input or failed in a way the agent should see (status + stable code). */
export class ToolError extends LatticeError {
  override readonly name = 'ToolError';
  constructor(
    readonly status: number,
    code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

export interface ToolContext {
  identity: AgentIdentity;
  /** The namespace the call targets (args.namespace, else the agent's own), already checked. */
  namespace: string;
  args: Record<string, unknown>;
  trace: TraceContext;
}

export type ToolImpl = (ctx: ToolContext) => Promise<unknown>;

export interface ExecuteDeps {
  identity: AgentIdentity;
  isRevoked: () => boolean;
  tools: Readonly<Record<string, ToolImpl>>;
  recordSpan: (draft: AuditEventDraft) => void | Promise<void>;
  /**
   * Whether a span can be recorded now (e.g. () => !outbox.isFull()). In enforce mode a tool does
   * not run while this is false: no side effect happens that its span could not record.
   */
  auditReady?: () => boolean;
  now: () => number;
  randomHex?: (bytes: number) => string;
}

export interface ToolRequest {
  tool: string;
  /** The parsed JSON body (undefined: none). */
  args?: unknown;
  /** Set when the body could not be read or parsed: the call is still decided and recorded, then answered with it. */
  badBody?: { status: number; message: string };
  traceparent?: string;
}

export interface ToolResponse {
  status: number;
  body: { result: unknown; traceId: string; spanId: string } | { error: { code: string; message: string }; traceId: string; spanId: string };
  traceparent: string;
  span: AuditEventDraft & ToolSpan;
}

/** Error codes the control plane and tools use, and the HTTP status the agent gets for them. */
const STATUS_OF_CODE: Record<string, number> = {
  EBADREQ: 400,
  EUNAUTHORIZED: 401,
  EREVOKED: 403,
  EFORBIDDEN: 403,
  ETOKEN_EXPIRED: 403,
  ENOTFOUND: 404,
  EBUSY: 503,
  ECP_UNREACHABLE: 502,
  ECP_REPLY: 502,
};

const SPAN_TOOL_RE = /[^A-Za-z0-9_.:-]/g;
const oneLine = (s: string) => s.replace(/\s+/g, ' ').slice(0, 500);

function describeFailure(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof ToolError) return { status: err.status, code: err.code, message: oneLine(err.message) };
  if (err instanceof LatticeError && STATUS_OF_CODE[err.code]) return { status: STATUS_OF_CODE[err.code], code: err.code, message: oneLine(err.message) };
  return { status: 500, code: 'EINTERNAL', message: 'the tool failed; see the launcher log' };
}

/** Run one tool call through the checks (body, revocation, allowed tools, audit outbox) and the tool; the reply is status, JSON body and traceparent. */
export async function executeTool(deps: ExecuteDeps, req: ToolRequest): Promise<ToolResponse> {
  const { identity } = deps;
  const started = deps.now();
  const trace = traceFor(req.traceparent, deps.randomHex);
  const args = typeof req.args === 'object' && req.args !== null && !Array.isArray(req.args) ? (req.args as Record<string, unknown>) : {};
  let badBody = req.badBody;
  if (!badBody && req.args !== undefined && args !== req.args) badBody = { status: 400, message: 'body must be a JSON object' };
  if (!badBody && args.namespace !== undefined && typeof args.namespace !== 'string') badBody = { status: 400, message: 'namespace must be a string' };
  const namespace = typeof args.namespace === 'string' ? args.namespace : identity.namespace;

  const d = decideToolCall(identity, { tool: req.tool, namespace }, started, deps.isRevoked());
  let status: number;
  let spanStatus: SpanStatus;
  let reason: string | undefined = d.reason;
  let result: unknown;
  let error: { code: string; message: string } | undefined;
  const impl = Object.hasOwn(deps.tools, req.tool) ? deps.tools[req.tool] : undefined;
  if (!d.proceed) {
    status = 403;
    spanStatus = SpanStatus.Denied;
    error = { code: 'EDENIED', message: `${req.tool}: ${d.reason}` };
  } else if (badBody) {
    status = badBody.status;
    spanStatus = SpanStatus.Error;
    error = { code: 'EBADREQ', message: oneLine(badBody.message) };
  } else if (!impl) {
    status = 404;
    spanStatus = SpanStatus.Error;
    error = { code: 'ENOTOOL', message: `no tool ${req.tool}; tools: ${Object.keys(deps.tools).join(', ')}` };
  } else if (identity.enforcement === 'enforce' && deps.auditReady?.() === false) {
    // Fail closed: checked before the tool runs, not after, so nothing happens off the record.
    status = 503;
    spanStatus = SpanStatus.Error;
    error = { code: 'EAUDIT', message: `${req.tool} was not run: the audit outbox cannot record it now; retry once the control plane is reachable again` };
  } else {
    try {
      result = await impl({ identity, namespace, args, trace });
      status = 200;
      spanStatus = SpanStatus.Ok;
    } catch (err) {
      const f = describeFailure(err);
      status = f.status;
      spanStatus = SpanStatus.Error;
      error = { code: f.code, message: f.message };
    }
  }
  if (error && !reason) reason = error.message;

  const ended = deps.now();
  const tool = req.tool.replace(SPAN_TOOL_RE, '_').slice(0, 128) || '_';
  const span: AuditEventDraft & ToolSpan = {
    type: 'tool.span',
    agentId: identity.agentId,
    namespace: identity.namespace,
    traceId: trace.traceId,
    spanId: trace.spanId,
    ...(trace.parentSpanId ? { parentSpanId: trace.parentSpanId } : {}),
    tool,
    status: spanStatus,
    decision: d.decision,
    durationMs: Math.max(0, Math.round(ended - started)),
    startTs: new Date(started).toISOString(),
    ...(reason ? { reason: reason.slice(0, 512) } : {}),
  };
  const ids = { traceId: trace.traceId, spanId: trace.spanId };
  try {
    await deps.recordSpan(span);
  } catch (err) {
    // Nothing happens off the record: without its span the call's answer is withheld.
    return {
      status: 503,
      body: { error: { code: 'EAUDIT', message: `the call could not be recorded: ${oneLine((err as Error).message ?? String(err))}` }, ...ids },
      traceparent: formatTraceparent(trace),
      span,
    };
  }
  return {
    status,
    body: error ? { error, ...ids } : { result, ...ids },
    traceparent: formatTraceparent(trace),
    span,
  };
}
