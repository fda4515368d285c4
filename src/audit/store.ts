import { AckPolicy, DeliverPolicy, nanos, type ConsumerConfig, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { UsageError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import {
  AUDIT_SUBJECT_PREFIX, AuditEventType, TOKEN_RE, auditSubject, parseAuditEvent,
  type AuditEnvelope, type AuditEvent, type ToolSpan,
} from './events.js';
import { AUDIT_STREAM } from './stream.js';

/*
 * Control-plane side of the audit trail. The JetStream stream *is* the store: each query opens an ephemeral
 * ordered consumer filtered by subject (lattice.audit.<namespace>.<agentId>.<type>) and by start time or
 * stream sequence, reads until it has caught up, and answers from what it read. No second index to keep
 * consistent or rebuild; the stream's retention (max age / bytes) bounds what can be queried, and `maxScan`
 * bounds the work one query may do (the answer says `truncated` when it was hit).
 *
 * Agent filters are subject filters (the server does the work); trace queries read all spans in the time
 * range, because a trace crosses agents (a delegated child's spans belong to its parent's trace).
 *
 * Everything read is untrusted: payloads that fail the schema, or whose subject does not match their own
 * namespace/agent/type, are dropped and counted.
 */

export interface EventsQuery {
  namespace?: string;
  agentId?: string;
  /** A type ("flow.opened") or a family ("flow"). */
  type?: string;
  /** Earliest arrival time in the stream (events recorded while NATS was away count from when they arrived). */
  since?: Date;
  /** Only events after this stream sequence (the `cursor` of a previous answer): for polling. */
  after?: number;
  /** Newest `limit` events are returned (default 1000). */
  limit?: number;
}

export interface TracesQuery {
  agentId?: string;
  traceId?: string;
  since?: Date;
  after?: number;
  /** Newest `limit` traces (default 100). */
  limit?: number;
}

export type StoredEvent = AuditEvent & { streamSeq: number };
export type SpanEvent = AuditEnvelope & ToolSpan & { streamSeq: number };

export interface SpanNode {
  span: SpanEvent;
  children: SpanNode[];
}

export interface TraceView {
  traceId: string;
  startTs: string;
  endTs: string;
  agents: string[];
  spanCount: number;
  /** Spans whose decision was deny or would-deny. */
  violations: number;
  /** Spans without a parent in this trace (the parent may be outside the queried range). */
  roots: SpanNode[];
}

export interface ScanInfo {
  scanned: number;
  dropped: number;
  truncated: boolean;
  /** Highest stream sequence seen; pass it back as `after` to get only newer events. */
  cursor: number;
}

export interface AuditStoreOptions {
  nc: NatsConnection;
  stream?: string;
  /** Most messages one query reads (default 500,000). */
  maxScan?: number;
  logger?: Logger;
}

const FAMILIES = new Set(Object.values(AuditEventType).map((t) => t.split('.')[0]));
const TYPES = new Set<string>(Object.values(AuditEventType));
const TRACE_ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;

/** Queries over the audit stream (see the comment above); every answer is bounded by `maxScan`. */
export class AuditStore {
  private readonly js: JetStreamClient;
  private readonly jsm: JetStreamManager;
  private readonly stream: string;
  private readonly maxScan: number;
  private readonly log: Logger;
  private dropped = 0;

  private constructor(opts: AuditStoreOptions, jsm: JetStreamManager) {
    this.js = opts.nc.jetstream();
    this.jsm = jsm;
    this.stream = opts.stream ?? AUDIT_STREAM;
    this.maxScan = opts.maxScan ?? 500_000;
    this.log = opts.logger ?? createLogger({ name: 'audit-store' });
  }

  static async create(opts: AuditStoreOptions): Promise<AuditStore> {
    return new AuditStore(opts, await opts.nc.jetstreamManager());
  }

  /** Events dropped as invalid since start (hostile or corrupt input). */
  get droppedTotal(): number {
    return this.dropped;
  }

  /**
   * Events matching `q` in stream order: the newest q.limit (default 1000, at most 10,000); `truncated` when
   * older matches were left out or maxScan stopped the scan.
   */
  async events(q: EventsQuery): Promise<ScanInfo & { events: StoredEvent[] }> {
    const limit = clampLimit(q.limit, 1000, 10_000);
    const filter = subjectFilter(q.namespace, q.agentId, q.type);
    const out: StoredEvent[] = [];
    let truncated = false;
    const info = await this.scan(filter, q, (ev) => {
      out.push(ev);
      if (out.length > limit * 2) {
        out.splice(0, out.length - limit);
        truncated = true;
      }
    });
    if (out.length > limit) {
      out.splice(0, out.length - limit);
      truncated = true;
    }
    return { ...info, truncated: info.truncated || truncated, events: out };
  }

  /** tool.span events matching `q` grouped by traceId, each trace's spans ordered by start time. */
  async traces(q: TracesQuery): Promise<ScanInfo & { traces: TraceView[] }> {
    const limit = clampLimit(q.limit, 100, 1000);
    const byTrace = new Map<string, SpanEvent[]>();
    const info = await this.scan(subjectFilter(undefined, undefined, AuditEventType.ToolSpan), q, (ev) => {
      if (ev.type !== AuditEventType.ToolSpan) return;
      if (q.traceId && ev.traceId !== q.traceId) return;
      const list = byTrace.get(ev.traceId);
      if (list) list.push(ev as SpanEvent);
      else byTrace.set(ev.traceId, [ev as SpanEvent]);
    });
    let traces = [...byTrace.values()]
      .filter((spans) => !q.agentId || spans.some((s) => s.agentId === q.agentId))
      .map(buildTrace)
      .sort((a, b) => a.startTs.localeCompare(b.startTs));
    let truncated = info.truncated;
    if (traces.length > limit) {
      traces = traces.slice(traces.length - limit);
      truncated = true;
    }
    return { ...info, truncated, traces };
  }

  /**
   * Read the stream through an ephemeral consumer (no acks, deleted afterwards, expires on its own if we
   * crash) until caught up; `visit` sees each valid event. An explicit ephemeral consumer rather than the
   * client's "ordered consumer": the latter's info() never answers with nats-server 2.9.
   */
  private async scan(filter: string, q: { since?: Date; after?: number }, visit: (ev: StoredEvent) => void): Promise<ScanInfo> {
    const cfg: Partial<ConsumerConfig> = {
      ack_policy: AckPolicy.None,
      filter_subject: filter,
      deliver_policy: DeliverPolicy.All,
      inactive_threshold: nanos(60_000),
      mem_storage: true,
      num_replicas: 1,
    };
    if (q.after !== undefined && q.after > 0) {
      Object.assign(cfg, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: q.after + 1 });
    } else if (q.since) {
      Object.assign(cfg, { deliver_policy: DeliverPolicy.StartTime, opt_start_time: q.since.toISOString() });
    }
    const ci = await this.jsm.consumers.add(this.stream, cfg);
    const info: ScanInfo = { scanned: 0, dropped: 0, truncated: false, cursor: q.after ?? 0 };
    try {
      if (ci.num_pending === 0) return info;
      const consumer = await this.js.consumers.get(this.stream, ci.name);
      const msgs = await consumer.consume({ max_messages: 1000 });
      for await (const m of msgs) {
        info.scanned++;
        info.cursor = m.seq;
        const r = parseAuditEvent(m.data);
        if (!r.ok || auditSubject(r.event) !== m.subject) {
          info.dropped++;
          this.dropped++;
          if (this.dropped % 1000 === 1) this.log.warn({ subject: m.subject, reason: r.ok ? 'subject mismatch' : r.reason, droppedTotal: this.dropped }, 'audit store: dropped an invalid event');
        } else {
          visit({ ...r.event, streamSeq: m.seq });
        }
        if (m.info.pending === 0) break;
        if (info.scanned >= this.maxScan) {
          info.truncated = true;
          break;
        }
      }
      msgs.stop();
    } finally {
      await this.jsm.consumers.delete(this.stream, ci.name).catch(() => undefined);
    }
    return info;
  }
}

/** Assemble one trace's spans into parent/child trees. */
export function buildTrace(spans: SpanEvent[]): TraceView {
  const startOf = (s: SpanEvent) => s.startTs ?? s.ts;
  const sorted = [...spans].sort((a, b) => startOf(a).localeCompare(startOf(b)) || a.streamSeq - b.streamSeq);
  const nodes = new Map<string, SpanNode>();
  for (const s of sorted) if (!nodes.has(s.spanId)) nodes.set(s.spanId, { span: s, children: [] });
  const roots: SpanNode[] = [];
  for (const node of nodes.values()) {
    const parentId = node.span.parentSpanId;
    const parent = parentId && parentId !== node.span.spanId ? nodes.get(parentId) : undefined;
    if (parent && !isAncestor(node, parent, nodes)) parent.children.push(node);
    else roots.push(node);
  }
  const agents = [...new Set(sorted.map((s) => s.agentId))];
  return {
    traceId: sorted[0].traceId,
    startTs: startOf(sorted[0]),
    endTs: sorted.map((s) => s.ts).reduce((a, b) => (a > b ? a : b)),
    agents,
    spanCount: sorted.length,
    violations: sorted.filter((s) => s.decision !== 'allow').length,
    roots,
  };
}

/** True when `node` is an ancestor of `candidate` (a parent cycle from hostile input): keep it a root. */
function isAncestor(node: SpanNode, candidate: SpanNode, nodes: Map<string, SpanNode>): boolean {
  let cur: SpanNode | undefined = candidate;
  for (let hops = 0; cur && hops < 10_000; hops++) {
    if (cur === node) return true;
    const pid: string | undefined = cur.span.parentSpanId;
    cur = pid ? nodes.get(pid) : undefined;
  }
  return false;
}

function clampLimit(v: number | undefined, def: number, max: number): number {
  if (v === undefined || !Number.isFinite(v) || v <= 0) return def;
  return Math.min(Math.floor(v), max);
}

/** lattice.audit.<ns|*>.<agent|*>.<type | family.> | >>. Inputs must be validated tokens. */
export function subjectFilter(namespace?: string, agentId?: string, type?: string): string {
  const t = !type ? '>' : TYPES.has(type) ? type : `${type}.>`;
  return `${AUDIT_SUBJECT_PREFIX}.${namespace ?? '*'}.${agentId ?? '*'}.${t}`;
}

const DURATION_RE = /^(\d+)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "10m", "2h", "7d" (relative to now) or an ISO time. */
export function parseSince(v: string, now = Date.now()): Date {
  const m = DURATION_RE.exec(v.trim());
  if (m) return new Date(now - Number(m[1]) * UNIT_MS[m[2]]);
  const t = Date.parse(v);
  if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}/.test(v)) throw new UsageError(`since must be a duration like 10m, 2h, 7d or an ISO time, not ${JSON.stringify(v.slice(0, 40))}`);
  return new Date(t);
}

// ---------------------------------------------------------------------------------------------
// HTTP: query-string parsing (untrusted) and handlers shaped for the control plane's route table.

function param(sp: URLSearchParams, name: string, re?: RegExp): string | undefined {
  const v = sp.get(name);
  if (v === null || v === '') return undefined;
  if (re && !re.test(v)) throw new UsageError(`query parameter ${name} is not valid`);
  return v;
}

function intParam(sp: URLSearchParams, name: string): number | undefined {
  const v = param(sp, name, /^\d{1,15}$/);
  return v === undefined ? undefined : Number(v);
}

/**
 * An events query from URL parameters (namespace, agentId, type, since like "10m" or ISO, after, limit),
 * relative times counted back from `now` (ms since the epoch). Throws UsageError on a bad value.
 */
export function parseEventsQuery(sp: URLSearchParams, now = Date.now()): EventsQuery {
  const type = param(sp, 'type');
  if (type !== undefined && !TYPES.has(type) && !FAMILIES.has(type)) {
    throw new UsageError(`type ${JSON.stringify(type)} is neither an event type nor a family; use one of ${[...FAMILIES].join(', ')} or a full type like flow.opened`);
  }
  const since = param(sp, 'since');
  return {
    namespace: param(sp, 'namespace', TOKEN_RE),
    agentId: param(sp, 'agentId', TOKEN_RE),
    type,
    since: since === undefined ? undefined : parseSince(since, now),
    after: intParam(sp, 'after'),
    limit: intParam(sp, 'limit'),
  };
}

/** A traces query from URL parameters (agentId, traceId, since, after, limit). Throws UsageError on a bad value. */
export function parseTracesQuery(sp: URLSearchParams, now = Date.now()): TracesQuery {
  const since = param(sp, 'since');
  return {
    agentId: param(sp, 'agentId', TOKEN_RE),
    traceId: param(sp, 'traceId', TRACE_ID_RE),
    since: since === undefined ? undefined : parseSince(since, now),
    after: intParam(sp, 'after'),
    limit: intParam(sp, 'limit'),
  };
}

/** The part of the control plane's HttpApi this module needs. */
export interface RouteTable {
  route(method: string, pattern: string, handler: (ctx: { url: URL }) => Promise<unknown>): unknown;
}

export const AUDIT_API_PATHS = {
  traces: '/api/v1/agent-isolation/audit/traces',
  events: '/api/v1/agent-isolation/audit/events',
} as const;

/** The HTTP handlers of the audit routes, before mounting (mountAuditRoutes). */
export function auditHandlers(store: AuditStore) {
  return {
    traces: (ctx: { url: URL }) => store.traces(parseTracesQuery(ctx.url.searchParams)),
    events: (ctx: { url: URL }) => store.events(parseEventsQuery(ctx.url.searchParams)),
  };
}

/** Mount GET .../audit/traces and .../audit/events (admin auth is the route table's default). */
export function mountAuditRoutes(api: RouteTable, store: AuditStore): void {
  const h = auditHandlers(store);
  api.route('GET', AUDIT_API_PATHS.traces, h.traces);
  api.route('GET', AUDIT_API_PATHS.events, h.events);
}
