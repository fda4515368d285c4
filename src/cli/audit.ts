import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { API_BASE } from '../controlplane/index.js';
import { AUDIT_API_PATHS, parseSince, type SpanNode, type StoredEvent, type TraceView } from '../audit/store.js';
import { callApi, withApiOptions, type ApiOpts } from './api.js';

/**
 * lattice audit traces | events: query the control plane's audit API.
 * --follow polls the same endpoint once a second with `after=<cursor>` (the stream sequence of the last
 * event seen), so it needs nothing but the HTTP API and the admin token.
 */

interface AuditOpts extends ApiOpts {
  agent?: string;
  trace?: string;
  type?: string;
  namespace?: string;
  since?: string;
  limit?: string;
  follow?: boolean;
  json?: boolean;
  interval?: string;
}

type EventsReply = { events: StoredEvent[]; cursor: number; truncated: boolean; dropped: number };
type TracesReply = { traces: TraceView[]; cursor: number; truncated: boolean; dropped: number };

function get<T>(cmd: Command, o: AuditOpts, path: string, params: Record<string, string | undefined>): Promise<T> {
  return callApi<T>(cmd, o, 'GET', path, { query: params, timeoutMs: 60_000 });
}

function commonOptions(c: Command): Command {
  return withApiOptions(c)
    .option('--agent <name|ns/name|id>', 'only this agent: its name (ns/name when two namespaces share it) or agent id')
    .option('--since <when>', 'arrived within a duration (10m, 2h, 7d) or since an ISO time')
    .option('--limit <n>', 'newest N results')
    .option('--follow', 'keep printing new results as they arrive (Ctrl-C to stop)')
    .option('--interval <ms>', 'poll interval for --follow', '1000')
    .option('--json', 'print JSON (with --follow: one JSON object per line)');
}

type AgentRow = { agentId: string; name: string; namespace: string };

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The agents the control plane knows, for names in both directions: --agent NAME -> id, and ids shown
 * as namespace/name. Fetched on first need.
 */
class AgentNames {
  private rows?: AgentRow[];
  constructor(private readonly load: () => Promise<AgentRow[]>) {}

  async all(refresh = false): Promise<AgentRow[]> {
    if (!this.rows || refresh) this.rows = await this.load();
    return this.rows;
  }

  /** --agent value -> agent id; refuses an unknown or ambiguous name with the choices. */
  async resolve(input: string, namespace?: string): Promise<string> {
    if (UUID_RE.test(input)) return input;
    const [ns, name] = input.includes('/') ? (input.split('/', 2) as [string, string]) : [namespace, input];
    const rows = await this.all();
    const hits = rows.filter((a) => a.name === name && (ns === undefined || a.namespace === ns));
    const choices = (list: AgentRow[]) => list.map((a) => `${a.namespace}/${a.name}`).sort().join(', ');
    if (hits.length === 1) return hits[0]!.agentId;
    if (hits.length > 1) throw new UsageError(`--agent ${input} names ${hits.length} agents; pick one: ${choices(hits)} (or add --namespace)`);
    throw new UsageError(`--agent ${input}: no such agent; known agents: ${choices(rows) || 'none'}`);
  }

  /** namespace/name for an id, or the id itself when unknown. */
  label(agentId: string | undefined): string | undefined {
    const a = agentId ? this.rows?.find((r) => r.agentId === agentId) : undefined;
    return a ? a.name : agentId;
  }
}

function agentNames(cmd: Command, o: AuditOpts): AgentNames {
  return new AgentNames(async () => (await callApi<{ agents: AgentRow[] }>(cmd, o, 'GET', `${API_BASE}/agents`)).agents);
}

function checkSince(since?: string): void {
  if (since !== undefined) parseSince(since); // fail fast, before any request
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Register `audit traces|events` on `program`. */
export function registerAudit(program: Command): void {
  const audit = program.command('audit').description('query the audit trail (tool-call traces, flows, lifecycle)');

  commonOptions(audit.command('traces').description('tool-call spans as call trees'))
    .option('--trace <id>', 'only this trace')
    .action(async (o: AuditOpts, cmd: Command) => {
      checkSince(o.since);
      const names = agentNames(cmd, o);
      const params = { agentId: o.agent === undefined ? undefined : await names.resolve(o.agent), traceId: o.trace, since: o.since, limit: o.limit };
      const first = await get<TracesReply>(cmd, o, AUDIT_API_PATHS.traces, params);
      if (!o.follow) {
        if (o.json) console.log(JSON.stringify(first, null, 2));
        else printTraces(first);
        return;
      }
      for (const t of first.traces) for (const n of walk(t.roots)) printFollow(o, n.span);
      let cursor = first.cursor;
      for (;;) {
        await sleep(Number(o.interval) || 1000);
        const r = await get<TracesReply>(cmd, o, AUDIT_API_PATHS.traces, { ...params, after: String(cursor), limit: '1000' });
        for (const t of r.traces) for (const n of walk(t.roots)) printFollow(o, n.span);
        cursor = Math.max(cursor, r.cursor);
      }
    });

  commonOptions(audit.command('events').description('audit events: flows, DNS, lifecycle, policy, enrollment, spans'))
    .option('--type <type>', 'a type (flow.opened) or family (flow, dns, sandbox, policy, tool, enrollment)')
    .option('--namespace <ns>', 'only this namespace')
    .action(async (o: AuditOpts, cmd: Command) => {
      checkSince(o.since);
      if (o.limit !== undefined && !/^\d+$/.test(o.limit)) throw new UsageError('--limit must be a positive number');
      const names = agentNames(cmd, o);
      const params = { agentId: o.agent === undefined ? undefined : await names.resolve(o.agent, o.namespace), type: o.type, namespace: o.namespace, since: o.since, limit: o.limit };
      const first = await get<EventsReply>(cmd, o, AUDIT_API_PATHS.events, params);
      if (!o.json) await names.all().catch(() => undefined); // names for the lines; ids if the list fails
      // The NS/NAME column is as wide as the widest seen so far (all of a listing; grows while following).
      let whoWidth = 0;
      const widen = (events: StoredEvent[]) => (whoWidth = Math.max(whoWidth, ...events.map((e) => who(e, names.label(e.agentId)).length)));
      const show = (e: StoredEvent) => formatEvent(e, names.label(e.agentId), whoWidth);
      if (!o.json) widen(first.events);
      if (!o.follow) {
        if (o.json) console.log(JSON.stringify(first, null, 2));
        else {
          if (first.events.length === 0) console.error('no events match');
          for (const e of first.events) console.log(show(e));
          if (first.truncated) console.error(`(older events omitted; use --since or --limit)`);
        }
        return;
      }
      for (const e of first.events) console.log(o.json ? JSON.stringify(e) : show(e));
      let cursor = first.cursor;
      for (;;) {
        await sleep(Number(o.interval) || 1000);
        const r = await get<EventsReply>(cmd, o, AUDIT_API_PATHS.events, { ...params, after: String(cursor), limit: '10000' });
        if (!o.json && r.events.some((e) => e.agentId && names.label(e.agentId) === e.agentId)) await names.all(true).catch(() => undefined);
        if (!o.json) widen(r.events);
        for (const e of r.events) console.log(o.json ? JSON.stringify(e) : show(e));
        cursor = Math.max(cursor, r.cursor);
      }
    });
}

function printFollow(o: AuditOpts, e: StoredEvent): void {
  console.log(o.json ? JSON.stringify(e) : formatEvent(e));
}

function* walk(nodes: SpanNode[]): Generator<SpanNode> {
  for (const n of nodes) {
    yield n;
    yield* walk(n.children);
  }
}

function who(e: StoredEvent, agent?: string): string {
  return `${e.namespace ?? '-'}/${agent ?? e.agentId ?? '-'}`;
}

/**
 * One line per event, for people; `agent` is the agent's name when known (else its id is shown), and the
 * NS/NAME column is padded to `whoWidth` characters so a listing's columns line up.
 */
export function formatEvent(e: StoredEvent, agent?: string, whoWidth = 0): string {
  const head = `${e.ts}  ${e.type.padEnd(19)} ${who(e, agent).padEnd(whoWidth)}`;
  switch (e.type) {
    case 'flow.opened':
      return `${head}  ${e.proto} ${e.srcIp}:${e.srcPort} -> ${e.dstIp}:${e.dstPort} ${e.direction} ${e.verdict}${e.ruleId ? ` rule=${e.ruleId}` : ''}${e.note ? ` (${e.note})` : ''}`;
    case 'flow.closed':
      return `${head}  ${e.proto} ${e.srcIp}:${e.srcPort} -> ${e.dstIp}:${e.dstPort} out=${e.bytesOut}B/${e.packetsOut}p in=${e.bytesIn}B/${e.packetsIn}p ${e.durationMs}ms`;
    case 'dns.answered':
      return `${head}  ${e.name} ${e.qtype} -> ${e.answers.join(',') || '(empty)'}`;
    case 'dns.refused':
      return `${head}  ${e.name} ${e.qtype} refused: ${e.reason}`;
    case 'tool.span':
      return `${head}  ${e.tool} ${e.status} ${e.decision} ${e.durationMs}ms trace=${e.traceId} span=${e.spanId}${e.parentSpanId ? ` parent=${e.parentSpanId}` : ''}`;
    case 'sandbox.exited':
      return `${head}  ${e.sandboxId} code=${e.code}${e.signal ? ` signal=${e.signal}` : ''}`;
    case 'sandbox.created':
    case 'sandbox.started':
    case 'sandbox.stopped':
      return `${head}  ${e.sandboxId}`;
    case 'policy.applied':
      return `${head}  ${e.policyId} v${e.policyVersion} ${e.mode} rules=${e.rules}`;
    case 'enrollment.enrolled':
      return `${head}  ${e.enrollmentId}${e.overlayIp ? ` ip=${e.overlayIp}` : ''}${e.parentAgentId ? ` parent=${e.parentAgentId}` : ''}`;
    case 'enrollment.revoked':
      return `${head}  ${e.enrollmentId}${e.reason ? ` (${e.reason})` : ''}`;
    case 'approval.proposed':
      return `${head}  ${e.approvalId} ${e.kind} by ${JSON.stringify(e.by)}${e.summary ? `: ${e.summary}` : ''}`;
    case 'approval.decided':
      return `${head}  ${e.approvalId} ${e.kind} ${e.decision} by ${JSON.stringify(e.by)}${e.reason ? ` (${e.reason})` : ''}`;
    case 'route.changed':
      return `${head}  ${e.cidr} ${e.change} by ${JSON.stringify(e.by)}`;
    case 'policy.set':
      return `${head}  ${e.policyHash.slice(0, 19)} rules=${e.rules} by ${JSON.stringify(e.by)}`;
    case 'token.created':
      return `${head}  ${e.tokenId} limit=${e.limit} expires ${e.expiresAt} by ${JSON.stringify(e.by)}`;
    case 'labels.changed':
      return `${head}  ${e.labels.length ? e.labels.join(',') : '(none)'} by ${JSON.stringify(e.by)}`;
    case 'user.changed':
      return `${head}  ${e.user} ${e.change}${e.role ? ` role=${e.role}` : ''} by ${JSON.stringify(e.by)}`;
    case 'namespace.exit-node':
      return `${head}  exit-node=${e.exitNode || '(none)'}${e.optOut === 'allowed' ? ' opt-out allowed' : ''} by ${JSON.stringify(e.by)}`;
  }
}

function printTraces(r: TracesReply): void {
  if (r.traces.length === 0) console.log('no traces');
  for (const t of r.traces) {
    console.log(`trace ${t.traceId}  ${t.startTs}  ${t.spanCount} span(s), agents ${t.agents.join(',')}${t.violations ? `, ${t.violations} violation(s)` : ''}`);
    const draw = (nodes: SpanNode[], prefix: string) => {
      nodes.forEach((n, i) => {
        const last = i === nodes.length - 1;
        const s = n.span;
        console.log(`${prefix}${last ? '└─' : '├─'} ${s.tool}  ${s.namespace}/${s.agentId}  ${s.status} ${s.decision} ${s.durationMs}ms  span=${s.spanId}`);
        draw(n.children, `${prefix}${last ? '   ' : '│  '}`);
      });
    };
    draw(t.roots, '  ');
  }
  if (r.truncated) console.error('(older traces omitted; use --since or --limit)');
}
