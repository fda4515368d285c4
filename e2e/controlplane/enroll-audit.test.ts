import { createUser } from '@nats-io/jwt';
import { consumerOpts } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureAuditStream } from '../../src/audit/stream.js';
import { parseJoinToken, startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import { enroll } from '../../src/enroll/index.js';
import { requireBinary } from '../support/env.js';
import { cleanup, tempDir, wgKey } from './helpers.js';

/** Enrollment and revocation land in the audit stream (issue #20 item 6), in the agent's own name. */
let dir: string;
let cp: StartedControlPlane;

beforeAll(async () => {
  await requireBinary('nats-server');
  dir = await tempDir('enroll-audit');
  cp = await startControlPlane({ stateDir: dir, natsPort: 0, http: false });
  await ensureAuditStream(await cp.nc.jetstreamManager());
});
afterAll(async () => {
  await cp?.stop();
  await cleanup(dir);
});

describe('enrollment audit', () => {
  it('records enrollment.enrolled and enrollment.revoked on the agent\'s audit subject', async () => {
    const j = parseJoinToken((await cp.service.createToken({ namespace: 'aud' })).token);
    const r = await enroll({ controlPlaneUrl: cp.natsUrl, user: j.nats, token: j.token, name: 'watched', publicKey: wgKey(), natsPublicKey: createUser().getPublicKey() });
    await cp.service.revokeAgent('aud', 'watched');

    const opts = consumerOpts();
    opts.orderedConsumer();
    const sub = await cp.nc.jetstream().subscribe(`lattice.audit.aud.${r.agentId}.>`, opts);
    const seen: Array<Record<string, unknown>> = [];
    const safety = setTimeout(() => sub.unsubscribe(), 30_000);
    for await (const m of sub) {
      seen.push(m.json<Record<string, unknown>>());
      if (seen.some((e) => e.type === 'enrollment.revoked')) break;
    }
    clearTimeout(safety);
    expect(seen.map((e) => e.type)).toEqual(['enrollment.enrolled', 'enrollment.revoked']);
    expect(seen[0]).toMatchObject({ launcherId: 'control-plane', agentId: r.agentId, namespace: 'aud', enrollmentId: r.agentId, overlayIp: r.address.ipv4 });
  });
});
