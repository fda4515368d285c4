import { spawn, type ChildProcess } from 'node:child_process';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import { connect, AckPolicy, DeliverPolicy, nanos, type NatsConnection } from 'nats';
import { AUDIT_STREAM } from '../../src/audit/stream.js';
import { parseAuditEvent, type AuditEvent } from '../../src/audit/events.js';

/** Every message in the audit stream, parsed (invalid ones counted). */
export async function readStream(url: string): Promise<{ events: AuditEvent[]; invalid: number; messages: number }> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info(AUDIT_STREAM);
    const events: AuditEvent[] = [];
    let invalid = 0;
    if (info.state.messages > 0) {
      const ci = await jsm.consumers.add(AUDIT_STREAM, { ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.All, inactive_threshold: nanos(60_000) });
      const c = await nc.jetstream().consumers.get(AUDIT_STREAM, ci.name);
      const it = await c.consume({ max_messages: 2000 });
      for await (const m of it) {
        const r = parseAuditEvent(m.data);
        if (r.ok) events.push(r.event);
        else invalid++;
        if (m.info.pending === 0) break;
      }
      it.stop();
    }
    return { events, invalid, messages: info.state.messages };
  } finally {
    await nc.close();
  }
}

/** Exactly-once check: distinct ids == messages, seq 1..n without gaps per launcher. */
export function checkExactlyOnce(events: AuditEvent[]): { distinctIds: number; maxSeq: number; missing: number[]; duplicateSeqs: number } {
  const ids = new Set(events.map((e) => e.id));
  const seqs = new Map<number, number>();
  for (const e of events) seqs.set(e.seq, (seqs.get(e.seq) ?? 0) + 1);
  const maxSeq = Math.max(0, ...seqs.keys());
  const missing: number[] = [];
  for (let s = 1; s <= maxSeq; s++) if (!seqs.has(s)) missing.push(s);
  return { distinctIds: ids.size, maxSeq, missing: missing.slice(0, 20), duplicateSeqs: [...seqs.values()].filter((n) => n > 1).length };
}

export interface Producer {
  child: ChildProcess;
  recorded: number;
  acked: number;
  done: Promise<number | null>;
  /** Let the producer record up to `seq` (it records nothing until told). */
  limit(seq: number): void;
  waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void>;
}

/** Run e2e/audit/fixtures/producer.ts as its own node process (so SIGKILL hits the producer itself). */
export function spawnProducer(dir: string, url: string, total: number): Producer {
  const script = fileURLToPath(new URL('./fixtures/producer.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', script, dir, url, String(total)], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin!.on('error', () => {}); // EPIPE once the test has killed it
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const p: Producer = {
    child,
    recorded: 0,
    acked: 0,
    done: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
    limit(seq) {
      child.stdin!.write(`limit ${seq}\n`);
    },
    async waitFor(pred, timeoutMs, what) {
      const deadline = Date.now() + timeoutMs;
      while (!pred()) {
        if (child.exitCode !== null && !pred()) throw new Error(`producer exited (${child.exitCode}) before ${what}: ${stderr}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (recorded ${p.recorded}, acked ${p.acked}): ${stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const [k, v] = line.split(' ');
      if (k === 'recorded') p.recorded = Math.max(p.recorded, Number(v));
      if (k === 'acked') p.acked = Math.max(p.acked, Number(v));
    }
  });
  return p;
}

/** How many messages the audit stream holds now. */
export async function streamMessages(url: string): Promise<number> {
  const nc = await connect({ servers: url });
  try {
    return (await (await nc.jetstreamManager()).streams.info(AUDIT_STREAM)).state.messages;
  } finally {
    await nc.close();
  }
}

/** The pid of the process listening on 127.0.0.1:`port` (to freeze a server with SIGSTOP). */
export async function pidListeningOn(port: number): Promise<number> {
  const { stdout } = await execa('ss', ['-Htlnp', `sport = :${port}`]);
  const m = /pid=(\d+)/.exec(stdout);
  if (!m) throw new Error(`no process listens on port ${port}: ${stdout}`);
  return Number(m[1]);
}

export async function natsConnect(url: string): Promise<NatsConnection> {
  return connect({ servers: url });
}
