import type { ServerResponse } from 'node:http';
import { AckPolicy, DeliverPolicy, nanos, type ConsumerConfig, type NatsConnection } from 'nats';
import type { Logger } from '../log.js';
import { auditSubject, parseAuditEvent } from '../audit/events.js';
import { parseEventsQuery, subjectFilter } from '../audit/store.js';
import { AUDIT_STREAM } from '../audit/stream.js';
import { API_BASE } from '../controlplane/api.js';
import type { HttpApi, RouteContext } from '../controlplane/http.js';
import { CpErrorCode, ControlPlaneError } from '../controlplane/types.js';

/*
 * GET .../audit/live[?namespace=NS&agentId=ID&type=flow&since=15m]   (admin: bearer token or console session)
 *
 * The audit stream as server-sent events (WHATWG HTML, "Server-sent events"): one `audit` event per stream
 * message from the moment of the request on (or from `since`, a duration or ISO time, to start with recent
 * history), `id:` = the JetStream stream sequence, so a reconnecting
 * EventSource (Last-Event-ID) resumes after the last event it saw instead of losing or repeating any.
 *
 *   client --GET--> consumer added (ephemeral, no acks, filtered by subject, deliver new | from seq+1)
 *          <--200 text/event-stream-- ": live" comment (the consumer exists from here on)
 *          <-- id: 812 / event: audit / data: {...event, streamSeq} -- per valid message
 *          <-- ": hb" every heartbeatMs (proxies and dead clients)
 *   client gone -> consumer stopped and deleted (and it expires by itself after 60 s if we crash)
 *
 * Messages that fail the event schema or whose subject does not match their own fields are dropped (as
 * the query API does). A client that does not read (more than MAX_BUFFERED bytes queued) is cut off.
 */

export const AUDIT_LIVE_PATH = `${API_BASE}/audit/live`;
/** Bytes queued for one slow client before it is disconnected. */
export const MAX_BUFFERED = 1024 * 1024;

export interface AuditLiveOptions {
  nc: NatsConnection;
  stream?: string;
  /** Streams open at once (default 16); more get 503. */
  maxClients?: number;
  /** Comment line interval in ms (default 15 s). */
  heartbeatMs?: number;
  log?: Logger;
}

/** Mount GET .../audit/live on `api`. */
export function mountAuditLive(api: HttpApi, o: AuditLiveOptions): void {
  const stream = o.stream ?? AUDIT_STREAM;
  const maxClients = o.maxClients ?? 16;
  const heartbeatMs = o.heartbeatMs ?? 15_000;
  let clients = 0;
  // Made at the first request, so mounting needs no round trip to NATS.
  let jsmP: ReturnType<NatsConnection['jetstreamManager']> | undefined;

  api.route('GET', AUDIT_LIVE_PATH, async (ctx: RouteContext) => {
    const q = parseEventsQuery(ctx.url.searchParams);
    const lastId = ctx.req.headers['last-event-id'];
    const after = typeof lastId === 'string' && /^\d{1,15}$/.test(lastId) ? Number(lastId) : q.after;
    if (clients >= maxClients) throw new ControlPlaneError(CpErrorCode.Busy, `${maxClients} live audit streams are open already; close one`);
    clients++;
    let closed = false;
    const res: ServerResponse = ctx.res;
    try {
      jsmP ??= o.nc.jetstreamManager().catch((err: unknown) => {
        jsmP = undefined;
        throw err;
      });
      const jsm = await jsmP;
      const js = o.nc.jetstream();
      const cfg: Partial<ConsumerConfig> = {
        ack_policy: AckPolicy.None,
        filter_subject: subjectFilter(q.namespace, q.agentId, q.type),
        deliver_policy: DeliverPolicy.New,
        inactive_threshold: nanos(60_000),
        mem_storage: true,
        num_replicas: 1,
      };
      if (after !== undefined) Object.assign(cfg, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 });
      else if (q.since) Object.assign(cfg, { deliver_policy: DeliverPolicy.StartTime, opt_start_time: q.since.toISOString() });
      const ci = await jsm.consumers.add(stream, cfg);
      const msgs = await (await js.consumers.get(stream, ci.name)).consume({ max_messages: 256 });
      const end = () => {
        if (closed) return;
        closed = true;
        clients--;
        clearInterval(hb);
        msgs.stop();
        jsm.consumers.delete(stream, ci.name).catch(() => undefined);
        if (!res.writableEnded) res.end();
      };
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', connection: 'keep-alive' });
      res.write('retry: 2000\n: live\n\n');
      const hb = setInterval(() => res.write(': hb\n\n'), heartbeatMs);
      res.on('close', end);
      void (async () => {
        for await (const m of msgs) {
          if (closed) break;
          const r = parseAuditEvent(m.data);
          if (!r.ok || auditSubject(r.event) !== m.subject) continue;
          // JSON.stringify escapes line breaks, so one data: line holds the whole event.
          res.write(`id: ${m.seq}\nevent: audit\ndata: ${JSON.stringify({ ...r.event, streamSeq: m.seq })}\n\n`);
          if (res.writableLength > MAX_BUFFERED) end();
        }
      })().catch((err: unknown) => {
        o.log?.warn({ err: (err as Error).message }, 'live audit stream ended');
        end();
      });
    } catch (err) {
      if (!closed) clients--;
      closed = true;
      throw err;
    }
  });
}
