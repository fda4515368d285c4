import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { Outbox, OutboxFullError } from '../../src/audit/outbox.js';
import { OutboxPublisher } from '../../src/audit/publisher.js';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { readStream, checkExactlyOnce, spawnProducer, type Producer } from './helpers.js';

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
    expect(await pub.drained(10_000)).toBe(true); // the stream exists and the path works

    await nats.stop();
    nats = null;
    for (let i = 1; i <= 100; i++) await ob.append(span(i));
    await new Promise((r) => setTimeout(r, 1500)); // publishes time out meanwhile and are retried
    expect(ob.ackedThrough).toBe(1);
    expect(pub.stats().failures).toBeGreaterThan(0);

    nats = await startNatsServer({ storeDir, port });
    expect(await pub.drained(30_000)).toBe(true);
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

    const first = spawnProducer(dir, url, total);
    producers.push(first);
    await first.waitFor(() => first.acked >= 10_000, 60_000, '10k acknowledged');
    await nats.stop(); // nats-server goes away mid-stream
    nats = null;
    const downAt = first.recorded;
    await first.waitFor(() => first.recorded >= downAt + 20_000, 60_000, '20k recorded while NATS is down');
    nats = await startNatsServer({ storeDir, port });
    const ackedBefore = first.acked;
    await first.waitFor(() => first.acked > ackedBefore + 5000 && first.recorded >= 60_000, 60_000, 'publishing resumed');
    first.child.kill('SIGKILL'); // mid-publish and mid-append
    await first.done;
    const recordedBeforeKill = first.recorded;
    expect(recordedBeforeKill).toBeLessThan(total);

    const second = spawnProducer(dir, url, total);
    producers.push(second);
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
    expect(await pub.drained(30_000)).toBe(true);
    expect(ob.isFull()).toBe(false);
    await ob.append(span(1000));
    expect(await pub.drained(10_000)).toBe(true);
    await pub.stop();
    await ob.close();
    const { events, messages } = await readStream(url);
    expect(messages).toBe(accepted + 1);
    expect(checkExactlyOnce(events)).toEqual({ distinctIds: accepted + 1, maxSeq: accepted + 1, missing: [], duplicateSeqs: 0 });
  });
});
