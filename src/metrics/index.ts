import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { LatticeError, UsageError } from '../errors.js';

/**
 * Prometheus metrics (text exposition format 0.0.4) of the control plane and of each launcher, with
 * prom-client. Pull model: the figures already live in the components' own counters (Device.stats,
 * Pump.stats, Outbox.stats(), ControlPlaneService.stats, NatsApiStats); each metric reads them when
 * scraped (`collect`), so nothing is added to the packet path. Every registry is created per process
 * object (no global default registry), so two control planes in one process do not share figures.
 *
 * Names and units follow Prometheus conventions: `_total` counters, `_bytes`, `_seconds`. The README's
 * "Metrics" section lists them all.
 */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Who may scrape the control plane's GET /metrics: a request whose `Authorization: Bearer <t>` names one of
 * `tokens` (the scrape token of `--metrics-token-file`, the admin token). Compared as SHA-256 digests with
 * timingSafeEqual (equal lengths, no early exit on a prefix). No header, another scheme or an empty token: false.
 */
export function scrapeAuthorized(req: Pick<IncomingMessage, 'headers'>, tokens: readonly string[]): boolean {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (!m) return false;
  const given = createHash('sha256').update(m[1]).digest();
  let ok = false;
  for (const t of tokens) if (t.length > 0 && timingSafeEqual(given, createHash('sha256').update(t).digest())) ok = true;
  return ok;
}

/**
 * The scrape token from a file (Prometheus' `authorization: { credentials_file: ... }` reads the same file):
 * its first line, trimmed. @throws UsageError when it is shorter than 16 characters.
 */
export function parseScrapeToken(text: string, path: string): string {
  const t = (text.split('\n')[0] ?? '').trim();
  if (t.length < 16) throw new UsageError(`--metrics-token-file ${path}: the token is shorter than 16 characters; write a random one (e.g. openssl rand -hex 32 > ${path})`);
  return t;
}

/** A registry with the process metrics (CPU, memory, event loop lag) prefixed `lattice_`. */
export function newRegistry(): Registry {
  const reg = new Registry();
  collectDefaultMetrics({ register: reg, prefix: 'lattice_' });
  return reg;
}

// ----------------------------------------------------------------------------- control plane

/** What the control plane exposes: its service counters and its NATS request/reply edge. */
export interface ControlPlaneSources {
  /** ControlPlaneService.stats: cumulative counts. */
  service: { readonly enrollments: number; readonly enrollFailures: number; readonly revocations: number; readonly tokensCreated: number };
  /** NatsApiStats: requests served, malformed, failed (store unavailable among them), refused as busy. */
  nats: { readonly requests: number; readonly malformed: number; readonly errors: number; readonly unavailable: number; readonly busy: number };
  /** Replicas of the control plane's buckets. */
  replicas: number;
}

export function controlPlaneMetrics(reg: Registry, src: ControlPlaneSources): void {
  new Counter({
    name: 'lattice_cp_enrollments_total',
    help: 'Enrollment requests answered by this control-plane instance, by result (ok: identity issued; failed: refused or error).',
    labelNames: ['result'],
    registers: [reg],
    collect() {
      this.reset();
      this.inc({ result: 'ok' }, src.service.enrollments);
      this.inc({ result: 'failed' }, src.service.enrollFailures);
    },
  });
  counter(reg, 'lattice_cp_revocations_total', 'Agents revoked by this instance (cascaded children included).', () => src.service.revocations);
  counter(reg, 'lattice_cp_tokens_created_total', 'Enrollment tokens created by this instance (admin and delegated).', () => src.service.tokensCreated);
  new Counter({
    name: 'lattice_cp_nats_requests_total',
    help: 'NATS requests to lattice.cp.* handled by this instance, by outcome (served, malformed, error, unavailable: the store did not answer, busy).',
    labelNames: ['outcome'],
    registers: [reg],
    collect() {
      this.reset();
      const n = src.nats;
      this.inc({ outcome: 'served' }, Math.max(0, n.requests - n.malformed - n.errors - n.busy));
      this.inc({ outcome: 'malformed' }, n.malformed);
      this.inc({ outcome: 'error' }, n.errors - n.unavailable);
      this.inc({ outcome: 'unavailable' }, n.unavailable);
      this.inc({ outcome: 'busy' }, n.busy);
    },
  });
  gauge(reg, 'lattice_cp_replicas', 'Replicas of every control-plane KV bucket and of the audit stream.', () => src.replicas);
}

// ----------------------------------------------------------------------------- launcher

/** One WireGuard peer as the device reports it (wg/peer.ts PeerStatus). */
export interface PeerFigures {
  publicKey: string;
  /** Wall-clock ms of the latest completed handshake; 0 = never. */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
}

/** What a launcher exposes; each source is read at scrape time and may be absent (e.g. before the network is up). */
export interface LauncherSources {
  /** Wall-clock ms now (for handshake age). */
  now: () => number;
  /** The WireGuard device: its peers and its drop counters by reason (wg/device.ts DropReason). */
  device?: () => { peers: PeerFigures[]; dropped: Readonly<Record<string, number>>; rxPackets: number; txPackets: number } | undefined;
  /** The packet pump: packets by direction, drops by reason (dataplane/pump.ts PumpDrop), policy decisions by verdict. */
  pump?: () => { egressPackets: number; ingressPackets: number; dnsQueries: number; dropped: Readonly<Record<string, number>>; decisions: Readonly<Record<string, number>> } | undefined;
  /** The audit outbox: entries appended and acknowledged (sequence numbers), bytes not yet acknowledged. */
  outbox?: () => { nextSeq: number; ackedSeq: number; pendingBytes: number; refused: number } | undefined;
  /** The audit publisher's counters. */
  publisher?: () => { published: number; acked: number; failures: number; inflight: number; connected: boolean } | undefined;
}

/** The launcher's metrics; `observePublishLag` feeds the publish-to-acknowledgement histogram. */
export interface LauncherMetrics {
  observePublishLag(ms: number): void;
}

export function launcherMetrics(reg: Registry, src: LauncherSources): LauncherMetrics {
  const peerCounter = (name: string, help: string, field: 'rxBytes' | 'txBytes') =>
    new Counter({
      name,
      help,
      labelNames: ['peer'],
      registers: [reg],
      collect() {
        this.reset();
        for (const p of src.device?.()?.peers ?? []) this.inc({ peer: p.publicKey }, p[field]);
      },
    });
  peerCounter('lattice_wg_peer_received_bytes_total', 'Bytes of WireGuard transport data received from each peer (by its public key), after decryption checks.', 'rxBytes');
  peerCounter('lattice_wg_peer_sent_bytes_total', 'Bytes of WireGuard transport data sent to each peer (by its public key).', 'txBytes');
  new Gauge({
    name: 'lattice_wg_peer_handshake_age_seconds',
    help: 'Seconds since the latest completed handshake with each peer; -1 when none has completed.',
    labelNames: ['peer'],
    registers: [reg],
    collect() {
      this.reset();
      const now = src.now();
      for (const p of src.device?.()?.peers ?? []) this.set({ peer: p.publicKey }, p.latestHandshake > 0 ? Math.max(0, (now - p.latestHandshake) / 1000) : -1);
    },
  });
  byLabel(reg, 'lattice_wg_dropped_packets_total', 'WireGuard datagrams and packets dropped by the device, by reason (wg/device.ts DropReason).', 'reason', () => src.device?.()?.dropped);
  byLabel(reg, 'lattice_wg_packets_total', 'WireGuard transport packets, by direction (rx, tx).', 'direction', () => {
    const d = src.device?.();
    return d && { rx: d.rxPackets, tx: d.txPackets };
  });
  byLabel(reg, 'lattice_pump_packets_total', 'IP packets through the packet pump, by direction (egress: from the sandbox; ingress: to it).', 'direction', () => {
    const p = src.pump?.();
    return p && { egress: p.egressPackets, ingress: p.ingressPackets };
  });
  byLabel(reg, 'lattice_pump_dropped_packets_total', 'Packets dropped by the pump, by reason (dataplane/pump.ts PumpDrop).', 'reason', () => src.pump?.()?.dropped);
  byLabel(reg, 'lattice_policy_decisions_total', 'Policy decisions on new flows, by verdict (allow, deny, would_deny: denied by the policy but let through in audit mode).', 'verdict', () => src.pump?.()?.decisions);
  counter(reg, 'lattice_dns_queries_total', 'DNS queries the sandbox resolver answered.', () => src.pump?.()?.dnsQueries ?? 0);
  gauge(reg, 'lattice_audit_outbox_depth_events', 'Audit events recorded in the outbox and not yet acknowledged by JetStream.', () => {
    const o = src.outbox?.();
    return o ? Math.max(0, o.nextSeq - 1 - o.ackedSeq) : 0;
  });
  gauge(reg, 'lattice_audit_outbox_pending_bytes', 'Bytes of outbox entries not yet acknowledged (what counts against the outbox limit).', () => src.outbox?.()?.pendingBytes ?? 0);
  counter(reg, 'lattice_audit_outbox_refused_total', 'Audit events the outbox refused because it was full.', () => src.outbox?.()?.refused ?? 0);
  byLabel(reg, 'lattice_audit_published_total', 'Audit publishes by outcome (sent, acked, failed).', 'outcome', () => {
    const p = src.publisher?.();
    return p && { sent: p.published, acked: p.acked, failed: p.failures };
  });
  gauge(reg, 'lattice_audit_publisher_connected', '1 while the audit publisher has a NATS connection, else 0.', () => (src.publisher?.()?.connected ? 1 : 0));
  const lag = new Histogram({
    name: 'lattice_audit_publish_lag_seconds',
    help: 'Seconds from publishing an audit event to JetStream\'s acknowledgement of it.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [reg],
  });
  return { observePublishLag: (ms) => lag.observe(ms / 1000) };
}

function counter(reg: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [reg],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

function gauge(reg: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers: [reg],
    collect() {
      this.set(read());
    },
  });
}

function byLabel(reg: Registry, name: string, help: string, label: string, read: () => Readonly<Record<string, number>> | undefined): void {
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [reg],
    collect() {
      this.reset();
      for (const [k, v] of Object.entries(read() ?? {})) this.inc({ [label]: k }, v);
    },
  });
}

// ----------------------------------------------------------------------------- serving

/** `--metrics HOST:PORT` ([v6]:port too; port 0 = any free one) -> {host, port}; UsageError otherwise. */
export function parseMetricsListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--metrics ${s} is not host:port (e.g. 127.0.0.1:9464)`);
  return { host: m[1] ?? m[2], port };
}

export class MetricsListenError extends LatticeError {
  override readonly name = 'MetricsListenError';
  constructor(listen: string, cause: unknown) {
    super('EMETRICS_LISTEN', `cannot serve metrics on ${listen}: ${(cause as Error)?.message ?? cause}; pick another --metrics host:port`, { cause });
  }
}

export interface MetricsServer {
  readonly url: string;
  close(): Promise<void>;
}

/** A bare HTTP server answering GET /metrics with `reg` (the launcher's; the control plane mounts a route instead). */
export async function serveMetrics(reg: Registry, host: string, port: number): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    reg.metrics().then(
      (text) => res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE, 'cache-control': 'no-store' }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new MetricsListenError(`${host}:${port}`, err)));
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}/metrics`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
