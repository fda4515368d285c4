import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type NatsConnection } from 'nats';
import { DEFAULT_IPAM, startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import { enroll } from '../../src/enroll/index.js';
import type { StartedNatsServer } from '../../src/natsserver/server.js';
import { requireBinary } from '../support/env.js';
import { cleanup, tempDir, wgKeyPair, withNats } from './helpers.js';

/**
 * A control-plane instance that stops while it serves requests (a rolling restart, or bench/failover.ts's probe
 * instance) answers what it has in flight, issue #20: its handlers used to fail with CONNECTION_DRAINING when
 * its connection drained, and their callers got "internal error" (286 of 600 enrollments with 200 in flight).
 * Every enrollment below must be acknowledged; none may get EINTERNAL or no answer.
 */

const ROUNDS = 3;
const PER_ROUND = 100;
const ipam = { ...DEFAULT_IPAM, v4Pool: '10.64.0.0/10', v4SubnetPrefix: 18 };

let dir: string;
let nats: StartedNatsServer;
let cp: StartedControlPlane;
let nc: NatsConnection;

beforeAll(async () => {
  await requireBinary('nats-server');
  dir = await tempDir('cpstop');
  nats = await withNats(dir);
  cp = await startControlPlane({ stateDir: join(dir, 'cp'), natsUrl: nats.url, http: false, ipam });
  nc = await connect({ servers: nats.url });
}, 60_000);

afterAll(async () => {
  await nc?.close();
  await cp?.stop();
  await nats?.stop();
  if (dir) await cleanup(dir);
});

describe('a control-plane instance stopping under load', () => {
  it('answers every request it took before it stops: no internal error, no request left unanswered', async () => {
    const { token } = await cp.service.createToken({ namespace: 'stop', limit: ROUNDS * PER_ROUND, ttl: '1h' });
    const outcomes = new Map<string, number>();
    for (let round = 0; round < ROUNDS; round++) {
      const other = await startControlPlane({ stateDir: join(dir, 'cp2'), natsUrl: nats.url, http: false, ipam });
      const served = other.natsStats.requests;
      const all = Array.from({ length: PER_ROUND }, (_, i) =>
        // As a launcher does it: with its private key (a retry of one that got through answers ECHALLENGE), and a
        // timeout that only guards against a hang.
        enroll({ nc, token, name: `r${round}a${i}`, ...wgKeyPair(), timeoutMs: 120_000 }).then(
          () => 'ok',
          (err: { code?: string }) => String(err.code),
        ),
      );
      // Stop it once it has taken requests (the queue group splits them between the two instances).
      while (other.natsStats.requests === served) await new Promise((r) => setImmediate(r));
      await other.stop();
      for (const r of await Promise.all(all)) outcomes.set(r, (outcomes.get(r) ?? 0) + 1);
    }
    expect(Object.fromEntries(outcomes)).toEqual({ ok: ROUNDS * PER_ROUND });
  }, 180_000);
});
