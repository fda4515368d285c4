import { randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_BASE, encodeJoinToken, parseJoinToken, startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import { CaPinError, fetchDirectory, obtainIdentity } from '../../src/enroll/index.js';
import { freePort } from '../../src/natsserver/server.js';
import { requireBinary } from '../support/env.js';
import { cleanup, tempDir, wgKeyPair } from './helpers.js';

/**
 * TLS of the control plane (forced on loopback with `tls: true`; beyond loopback it is always on, see
 * remote.test.ts): the launcher trusts only the CA its join token pins, the admin API is HTTPS, and a
 * launcher keeps every URL it knows and gets through when the first is dead.
 */
let dir: string;
let launcherDir: string;
let cp: StartedControlPlane;

beforeAll(async () => {
  await requireBinary('nats-server');
  dir = await tempDir('tls-cp');
  launcherDir = await tempDir('tls-launcher');
  cp = await startControlPlane({ stateDir: dir, natsPort: 0, http: { host: '127.0.0.1', port: 0 }, tls: true });
});
afterAll(async () => {
  await cp?.stop();
  await cleanup(dir, launcherDir);
});

const identity = (name: string, token: string, controlPlaneUrl?: string) => obtainIdentity({ stateDir: launcherDir, name, token, controlPlaneUrl, generateKeyPair: wgKeyPair });

describe('NATS over TLS with a pinned CA', () => {
  it('refuses a client that does not trust the control plane CA', async () => {
    await expect(connect({ servers: cp.natsUrl, maxReconnectAttempts: 0, timeout: 5000 })).rejects.toThrow(/self.signed|certificate/i);
  });

  it('a wrong pin is one clear line, and the token is not spent', async () => {
    const { token } = await cp.service.createToken({ namespace: 'pin', limit: 1 });
    const j = parseJoinToken(token);
    const wrong = encodeJoinToken({ ...j, ca: `sha256:${randomBytes(32).toString('hex')}` });
    const err = await identity('wrongpin', wrong).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaPinError);
    expect((err as CaPinError).code).toBe('ETLS_PIN');
    expect((err as Error).message).not.toContain('\n');
    expect((err as Error).message).toMatch(new RegExp(`presented CA ${cp.tls!.caHash}, but the join token pins sha256:[0-9a-f]{64}: refusing`));
    // The right token still enrolls: nothing was spent by the refused attempt.
    const ok = await identity('rightpin', token);
    expect(ok.credentials.controlPlane.caPem).toBe(cp.tls!.caPem);
  });

  it('serves the admin API over HTTPS, verified against the same CA', async () => {
    expect(cp.httpUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${cp.httpUrl!}${API_BASE}/agents`, { ca: cp.tls!.caPem, headers: { authorization: `Bearer ${cp.adminToken}` } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.once('error', reject);
      req.end();
    });
    expect(status).toBe(200);
  });
});

describe('every URL a launcher learns', () => {
  it('a launcher whose first URL is dead gets through another; stored credentials keep the list', async () => {
    const dead = `nats://127.0.0.1:${await freePort()}`;
    const { token } = await cp.service.createToken({ namespace: 'urls', limit: 1 });
    // --control-plane "dead,live": the dead one first.
    const { credentials } = await identity('many', token, `${dead},${cp.natsUrl}`);
    expect(credentials.controlPlane.urls).toEqual([dead, cp.natsUrl]);
    const d = await fetchDirectory({ controlPlaneUrl: credentials.controlPlane.urls!, user: credentials.nats, caPem: credentials.controlPlane.caPem, jwt: credentials.jwt });
    expect(d.self.name).toBe('many');
    // A restart with the stored identity: the stored list, dead node first, still comes up.
    const again = await obtainIdentity({ stateDir: launcherDir, name: 'many', generateKeyPair: wgKeyPair });
    expect(again.reused).toBe(true);
  });
});
