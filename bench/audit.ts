/**
 * Audit pipeline figures (not pass/fail):
 *   1. outbox appends/s with one fdatasync per event (baseline) vs group commit, as a ratio;
 *   2. launcher -> JetStream events/s through the durable outbox with a real nats-server (goal >= 50,000/s).
 * Run: npx tsx bench/audit.ts [events]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'nats';
import { Outbox } from '../src/audit/outbox.js';
import { OutboxPublisher } from '../src/audit/publisher.js';
import { AUDIT_STREAM } from '../src/audit/stream.js';
import type { AuditEventDraft } from '../src/audit/events.js';
import { startNatsServer } from '../src/natsserver/server.js';
import { createLogger } from '../src/log.js';

const N = Number(process.argv[2] ?? 100_000);
const log = createLogger({ level: 'error' });

function draft(i: number): AuditEventDraft {
  return {
    type: 'flow.opened', agentId: 'bench-agent', namespace: 'bench', flowId: `f${i}`, sandboxId: 'sb1',
    proto: 'tcp', srcIp: '10.77.0.2', srcPort: 40000 + (i % 20000), dstIp: '93.184.216.34', dstPort: 443,
    direction: 'egress', verdict: 'allowed', ruleId: 'r1',
  };
}

/** Keep `concurrency` appends outstanding, like many producers (flows, spans) recording at once. */
async function appendMany(ob: Outbox, n: number, concurrency: number): Promise<number> {
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < n) await ob.append(draft(next++));
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'ltaudit-bench-'));
  try {
    // 1. fsync per event vs group commit (both with 256 producers in flight).
    const perEventN = 2000;
    const ob1 = await Outbox.open({ dir: join(root, 'per-event'), groupCommit: false, logger: log });
    const s1 = await appendMany(ob1, perEventN, 256);
    await ob1.close();
    const ob2 = await Outbox.open({ dir: join(root, 'group'), groupCommit: true, logger: log });
    const s2 = await appendMany(ob2, N, 256);
    const fsyncs = ob2.stats().fsyncs;
    await ob2.close();
    const r1 = perEventN / s1;
    const r2 = N / s2;
    console.log(`outbox append, fsync per event : ${r1.toFixed(0)} events/s (${perEventN} events)`);
    console.log(`outbox append, group commit    : ${r2.toFixed(0)} events/s (${N} events, ${fsyncs} fsyncs, ${(N / fsyncs).toFixed(1)} events/fsync)`);
    console.log(`group commit / per-event ratio : ${(r2 / r1).toFixed(1)}x`);

    // 2. end to end: append while publishing, until JetStream acknowledged everything.
    const nats = await startNatsServer({ storeDir: join(root, 'js') });
    try {
      const ob = await Outbox.open({ dir: join(root, 'e2e'), logger: log });
      const pub = new OutboxPublisher({ outbox: ob, servers: nats.url, logger: log });
      pub.start();
      const t0 = performance.now();
      await appendMany(ob, N, 256);
      const tAppend = (performance.now() - t0) / 1000;
      const ok = await pub.drained(120_000);
      const tAll = (performance.now() - t0) / 1000;
      await pub.stop();
      await ob.close();
      const nc = await connect({ servers: nats.url });
      const info = await (await nc.jetstreamManager()).streams.info(AUDIT_STREAM);
      await nc.close();
      console.log(`launcher -> JetStream          : ${(N / tAll).toFixed(0)} events/s (${N} events, appended in ${tAppend.toFixed(2)} s, all acked in ${tAll.toFixed(2)} s${ok ? '' : ', NOT DRAINED'})`);
      console.log(`stream holds                   : ${info.state.messages} messages; goal >= 50000 events/s: ratio ${(N / tAll / 50_000).toFixed(2)}`);
    } finally {
      await nats.stop();
    }

    // 3. backlog replay: events recorded while NATS was away, then published in one go.
    const nats2 = await startNatsServer({ storeDir: join(root, 'js2') });
    try {
      const ob = await Outbox.open({ dir: join(root, 'backlog'), logger: log });
      await appendMany(ob, N, 256);
      const pub = new OutboxPublisher({ outbox: ob, servers: nats2.url, logger: log });
      const t0 = performance.now();
      pub.start();
      await pub.drained(120_000);
      const t = (performance.now() - t0) / 1000;
      await pub.stop();
      await ob.close();
      console.log(`backlog replay to JetStream    : ${(N / t).toFixed(0)} events/s (${N} events)`);
    } finally {
      await nats2.stop();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
