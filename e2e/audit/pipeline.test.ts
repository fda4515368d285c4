import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { Outbox, OutboxFullError } from '../../src/audit/outbox.js';
import { OutboxPublisher } from '../../src/audit/publisher.js';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { waitFor } from '../support/env.js';
import { readStream, checkExactlyOnce, spawnProducer, pidListeningOn, streamMessages, type Producer } from './helpers.js';

// Real nats-server with JetStream; the test starts, stops and restarts it on the same port and store dir.
const quiet = pino({ level: 'silent' });
const span = (i: number): AuditEventDraft => ({
  type: 'tool.span', agentId: 'ltaudit-a', namespace: 'ltaudit', traceId: `t${Math.floor(i / 10)}`, spanId: `s${i}`,
  tool: 'list_peers', status: 'ok', decision: 'allow', durationMs: 1,
});

let root: string;
let nats: StartedNatsServer | null = null;
const producers: Producer[] = [];

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'ltaudit-e2e-'));
});
afterEach(async () => {
  for (const p of producers.splice(0)) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  await nats?.stop();
  nats = null;
  await rm(root, { recursive: true, force: true });
});

describe('audit outbox -> JetStream (real nats-server)', () => {
  it('events appended while nats-server is down all arrive exactly once after it returns', async () => {
    const storeDir = join(root, 'js');
    nats = await startNatsServer({ storeDir });
    const { port, url } = nats;
    const ob = await Outbox.open({ dir: join(root, 'outbox'), logger: quiet });
    const pub = new OutboxPublisher({ outbox: ob, servers: url, logger: quiet, publishTimeoutMs: 1000, backoff: { initialMs: 50, maxMs: 500 } });
    pub.start();
    await ob.append(span(0));
    expect(await pub.drained(60_000)).toBe(true); // the stream exists and the path works

    await nats.stop();
    nats = null;
    for (let i = 1; i <= 100; i++) await ob.append(span(i));
    await waitFor(() => pub.stats().failures > 0, 60_000, 'a publish to the stopped server to fail'); // and be retried
    expect(ob.ackedThrough).toBe(1);

    nats = await startNatsServer({ storeDir, port });
    expect(await pub.drained(60_000)).toBe(true);
    await pub.stop();
    await ob.close();

    const { events, invalid, messages } = await readStream(url);
    expect(invalid).toBe(0);
    expect(messages).toBe(101);
    expect(checkExactlyOnce(events)).toEqual({ distinctIds: 101, maxSeq: 101, missing: [], duplicateSeqs: 0 });
  });

  it('100,000 events through a nats-server restart and a kill -9 of the launcher: each stored exactly once, no seq gaps', async () => {
    const total = 100_000;
    const storeDir = join(root, 'js');
    nats = await startNatsServer({ storeDir });
    const { port, url } = nats;
    const dir = join(root, 'outbox');

    // The test sets the producer's pace (limits), so each phase below ends where the test decides, on any machine.
    const first = spawnProducer(dir, url, total);
    producers.push(first);
    first.limit(10_000);
    await first.waitFor(() => first.acked >= 10_000, 120_000, '10k recorded and acknowledged');
    await nats.stop(); // nats-server goes away mid-stream
    nats = null;
    first.limit(30_000);
    await first.waitFor(() => first.recorded >= 30_000, 120_000, '20k more recorded while NATS is down');
    expect(first.acked).toBe(10_000);
    nats = await startNatsServer({ storeDir, port });
    await first.waitFor(() => first.acked >= 30_000, 120_000, 'publishing resumed and caught up');

    // Freeze the server: from here every publish is in flight (sent, never acknowledged) until the kill.
    const serverPid = await pidListeningOn(port);
    process.kill(serverPid, 'SIGSTOP');
    try {
      first.limit(60_000);
      await first.waitFor(() => first.recorded >= 45_000, 120_000, '15k more recorded with publishes in flight');
      first.child.kill('SIGKILL'); // mid-append (limit 60k not reached when seen) and mid-publish (server frozen)
      await first.done;
    } finally {
      process.kill(serverPid, 'SIGCONT'); // the server now stores what the dead producer had sent
    }
    expect(first.acked).toBe(30_000);
    expect(first.recorded).toBeLessThan(total);
    // What the dead producer had sent reaches the stream unacknowledged: the second run must not store it twice.
    let stored = 0;
    for (const deadline = Date.now() + 60_000; (stored = await streamMessages(url)) <= 30_000;) {
      if (Date.now() > deadline) throw new Error(`the frozen server stored no in-flight publish (${stored} messages)`);
      await new Promise((r) => setTimeout(r, 50));
    }
    console.log(`kill -9 at recorded=${first.recorded} acked=${first.acked}; stream held ${stored} after the thaw`);

    const second = spawnProducer(dir, url, total);
    producers.push(second);
    second.limit(total);
    expect(await second.done).toBe(0);
    expect(second.acked).toBe(total);

    const { events, invalid, messages } = await readStream(url);
    expect(invalid).toBe(0);
    expect(messages).toBe(total);
    expect(checkExactlyOnce(events)).toEqual({ distinctIds: total, maxSeq: total, missing: [], duplicateSeqs: 0 });
  }, 240_000);

  it('a full outbox refuses and counts, reports isFull, and accepts again once the backlog is acknowledged', async () => {
    const storeDir = join(root, 'js');
    nats = await startNatsServer({ storeDir });
    const { port, url } = nats;
    await nats.stop();
    nats = null;
    const ob = await Outbox.open({ dir: join(root, 'outbox'), maxBytes: 32 * 1024, logger: quiet });
    const pub = new OutboxPublisher({ outbox: ob, servers: url, logger: quiet, publishTimeoutMs: 500, backoff: { initialMs: 50, maxMs: 200 } });
    pub.start();
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 500; i++) {
      await ob.append(span(i)).then(() => accepted++, (err: unknown) => {
        if (!(err instanceof OutboxFullError)) throw err;
        refused++;
      });
    }
    expect(accepted).toBeGreaterThan(10);
    expect(refused).toBe(500 - accepted);
    expect(ob.isFull()).toBe(true);
    expect(ob.stats().refused).toBe(refused);

    nats = await startNatsServer({ storeDir, port });
    expect(await pub.drained(60_000)).toBe(true);
    expect(ob.isFull()).toBe(false);
    await ob.append(span(1000));
    expect(await pub.drained(60_000)).toBe(true);
    await pub.stop();
    await ob.close();
    const { events, messages } = await readStream(url);
    expect(messages).toBe(accepted + 1);
    expect(checkExactlyOnce(events)).toEqual({ distinctIds: accepted + 1, maxSeq: accepted + 1, missing: [], duplicateSeqs: 0 });
  });
});
