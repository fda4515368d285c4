import { randomBytes } from 'node:crypto';
import { chmod, copyFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_API_SOCKET, agentApiMounts, startAgentApi, type StartedAgentApi } from '../../src/agentapi/index.js';
import { startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { buildSpec } from '../../src/oci/spec.js';
import { writeBundle } from '../../src/oci/bundle.js';
import { Runsc } from '../../src/runsc/client.js';
import { requireBinary } from '../support/env.js';
import { tempDir } from './helpers.js';

// /run/lattice inside the sandbox holds the agent API socket and nothing else: no host directory is
// mounted there, so the agent cannot write to the host disk through it. (The rootfs has no
// /run/lattice: the launcher's mounts make it.)

const REPO = fileURLToPath(new URL('../..', import.meta.url));

let work: Awaited<ReturnType<typeof tempDir>>;
let nats: StartedNatsServer;
let nc: NatsConnection;
let api: StartedAgentApi;
let runsc: Runsc;
const ids: string[] = [];
let rootfs: string;
let sockDir: string;

beforeAll(async () => {
  await requireBinary('runsc');
  await requireBinary('gcc');
  work = await tempDir('sbxmount');
  rootfs = join(work.path, 'rootfs');
  await execa('sh', [join(REPO, 'bundles/demo/build-rootfs.sh'), rootfs]);
  await execa('gcc', ['-static', '-O2', '-o', join(work.path, 'agentcall'), join(REPO, 'e2e/agentapi/fixtures/agentcall.c')]);
  await copyFile(join(work.path, 'agentcall'), join(rootfs, 'bin/agentcall'));
  await chmod(join(rootfs, 'bin/agentcall'), 0o755);
  nats = await startNatsServer({ storeDir: join(work.path, 'nats'), port: 0 });
  nc = await connect({ servers: nats.url });
  sockDir = join(work.path, 'sandbox', 'agentapi');
  api = await startAgentApi({
    socketPath: join(sockDir, 'agent.sock'),
    identity: {
      agentId: '5d0f6f8e-2b1c-4f7a-9e3d-1a2b3c4d5e6f',
      name: 'boxed',
      namespace: 'ltaa-mnt',
      jwt: 'not-shown-to-the-agent',
      jwtExpiresAt: Date.now() + 3600_000,
      allowedTools: [],
      allowedNamespaces: [],
      enforcement: 'enforce',
    },
    nc,
    isRevoked: () => false,
    checkEgress: () => ({ verdict: 'denied' }),
    getPolicy: () => ({ version: 1, mode: 'enforce', egress: [] }),
    recordSpan: () => undefined,
  });
  runsc = new Runsc({ root: join(work.path, 'runsc'), network: 'none', hostUds: true });
}, 120_000);

afterAll(async () => {
  for (const id of ids) await execa('runsc', ['--root', join(work.path, 'runsc'), 'delete', '-force', id], { reject: false });
  await api?.close();
  await nc?.close();
  await nats?.stop();
  await work?.remove();
});

describe('agent API mount: the socket only', () => {
  it('the agent reaches the socket, cannot write into /run/lattice, and nothing lands on the host', async () => {
    const id = `ltmnt-${randomBytes(4).toString('hex')}`;
    ids.push(id);
    const spec = buildSpec({
      args: ['sh', '-c', `agentcall ${AGENT_API_SOCKET} GET /v1/identity; echo; echo ---; ls -A /run/lattice; echo ---; head -c 1000000 /dev/zero > /run/lattice/fill; echo "write=$?"; mkdir /run/lattice/d; echo "mkdir=$?"`],
      rootfs,
      user: { uid: 1000, gid: 1000 },
      mounts: agentApiMounts(join(sockDir, 'agent.sock')),
    });
    const bundle = await writeBundle(join(work.path, 'bundles', id), spec);
    const { child } = await runsc.run(id, bundle.dir, { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
    const r = await child;
    const [identity, listing, writes] = String(r.stdout).split('\n---\n');
    expect(identity).toMatch(/^HTTP\/1\.[01] 200/);
    expect(identity).toContain('"name":"boxed"');
    expect(listing.trim()).toBe('agent.sock');
    expect(writes).toMatch(/write=1/);
    expect(writes).toMatch(/mkdir=1/);
    expect(await readdir(sockDir)).toEqual(['agent.sock']);
  });

  it('as root too: a read-only tmpfs refuses writes whatever the uid', async () => {
    const id = `ltmnt-${randomBytes(4).toString('hex')}`;
    ids.push(id);
    const spec = buildSpec({
      args: ['sh', '-c', 'echo x > /run/lattice/f; echo "write=$?"; grep " /run/lattice " /proc/mounts'],
      rootfs,
      mounts: agentApiMounts(join(sockDir, 'agent.sock')),
    });
    const bundle = await writeBundle(join(work.path, 'bundles', id), spec);
    const { child } = await runsc.run(id, bundle.dir, { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
    const r = await child;
    expect(String(r.stdout)).toContain('write=1');
    expect(String(r.stdout)).toMatch(/^\S+ \/run\/lattice tmpfs ro[,\s]/m);
    expect(await readdir(sockDir)).toEqual(['agent.sock']);
  });
});
