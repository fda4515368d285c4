import { execa, type ResultPromise } from 'execa';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import { enroll } from '../../src/enroll/index.js';
import { parseJoinToken } from '../../src/controlplane/join.js';
import { createUser } from '@nats-io/jwt';
import { REPO, requireBinaries, requireRoot } from '../support/env.js';
import { cleanup, tempDir, wgKey } from './helpers.js';

/**
 * Another host, on one machine: a network namespace joined to this one by a veth and nothing else. The
 * control plane listens on this side's veth address only (so NATS speaks TLS); the launcher in the
 * namespace has nothing but a join token: it finds the control plane by the token's URL, pins its CA by
 * the token's hash, enrolls over TLS, gets its peer, and is revoked; the server closes its connection.
 */
const sfx = randomBytes(3).toString('hex');
const ns = `lt12b-${sfx}`;
const vh = `vh12b${sfx}`;
const vr = `vr12b${sfx}`;
const k = randomBytes(1)[0]! % 60;
const hostAddr = `198.18.${k}.1`;
const remoteAddr = `198.18.${k}.2`;
let dir: string;
let remoteDir: string;
let cp: StartedControlPlane | undefined;
let child: ResultPromise | undefined;

beforeAll(async () => {
  requireRoot();
  await requireBinaries('nats-server', 'ip');
  dir = await tempDir('remote-cp');
  remoteDir = await tempDir('remote-launcher');
  await execa('sh', ['-c', [
    `ip netns add ${ns}`,
    `ip link add ${vh} type veth peer name ${vr} netns ${ns}`,
    `ip addr add ${hostAddr}/30 dev ${vh}`,
    `ip link set ${vh} up`,
    `ip -n ${ns} link set lo up`,
    `ip -n ${ns} addr add ${remoteAddr}/30 dev ${vr}`,
    `ip -n ${ns} link set ${vr} up`,
  ].join(' && ')]);
  cp = await startControlPlane({ stateDir: dir, natsHost: hostAddr, natsPort: 0, http: false });
});

afterAll(async () => {
  child?.kill('SIGKILL');
  await child?.catch(() => undefined);
  await cp?.stop();
  await execa('ip', ['link', 'del', vh], { reject: false });
  await execa('ip', ['netns', 'del', ns], { reject: false });
  await cleanup(dir, remoteDir);
});

describe('a launcher on another host (its own network namespace, a veth to the control plane)', () => {
  it('enrolls over TLS with the join token alone, gets its peer, and its connection dies when revoked', async () => {
    expect(cp!.tls?.caHash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(cp!.natsUrls).toEqual([expect.stringMatching(new RegExp(`^nats://${hostAddr.replace(/\./g, '\\.')}:\\d+$`))]);
    const { token } = await cp!.service.createToken({ namespace: 'far', limit: 2 });
    const j = parseJoinToken(token);
    expect(j.urls).toEqual(cp!.natsUrls);
    expect(j.ca).toBe(cp!.tls!.caHash);
    // A peer on this host, enrolled first (over TLS as well: the server accepts nothing else now).
    const kp = createUser();
    await enroll({ controlPlaneUrl: cp!.natsUrls, caPem: cp!.tls!.caPem, user: j.nats, token: j.token, name: 'near', publicKey: wgKey(), natsPublicKey: kp.getPublicKey() });

    child = execa('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', join(REPO, 'e2e/controlplane/fixtures/remote-launcher.ts'), remoteDir, token], { cwd: REPO, reject: false });
    const lines = createInterface({ input: child.stdout! });
    // Every line is kept from the start (a line may arrive before the test asks for it).
    const events: Array<Record<string, unknown>> = [];
    let wake = () => {};
    lines.on('line', (l: string) => {
      events.push(JSON.parse(l) as Record<string, unknown>);
      wake();
    });
    const next = (ev: string, safetyMs = 30_000) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${ev} from the remote launcher within ${safetyMs} ms: ${JSON.stringify(events)}`)), safetyMs);
        const check = () => {
          const e = events.find((x) => x.ev === ev || x.ev === 'error');
          if (!e) return;
          clearTimeout(t);
          if (e.ev === 'error') reject(new Error(`remote launcher: ${String(e.message)}`));
          else resolve(e);
        };
        wake = check;
        check();
      });

    const enrolled = await next('enrolled');
    expect(enrolled).toMatchObject({ peers: ['near'], urls: cp!.natsUrls, tls: true });
    const watching = await next('watching');
    expect(watching).toMatchObject({ peers: ['near'], tlsRequired: true });

    const t0 = Date.now();
    await cp!.service.revokeAgent('far', 'remote');
    const gone = await next('disconnected', 15_000);
    const ms = (gone.at as number) - t0;
    console.log(`remote launcher's NATS connection closed ${ms} ms after the revocation call (contract: 1000 ms; bench/controlplane.ts measures it)`);
    expect(ms).toBeGreaterThanOrEqual(0);
    const refused = await next('refused');
    expect(refused.code).toBe('EREVOKED');
  });
});
