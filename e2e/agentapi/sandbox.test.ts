import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_API_MOUNT, AGENT_API_SOCKET, startAgentApi, type StartedAgentApi } from '../../src/agentapi/index.js';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { buildSpec } from '../../src/oci/spec.js';
import { writeBundle } from '../../src/oci/bundle.js';
import { Runsc } from '../../src/runsc/client.js';
import { tempDir } from './helpers.js';
import { requireBinary } from '../support/env.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

let work: Awaited<ReturnType<typeof tempDir>>;
let nats: StartedNatsServer;
let nc: NatsConnection;
let api: StartedAgentApi;
let runsc: Runsc;
const ids: string[] = [];
const spans: AuditEventDraft[] = [];
let rootfs: string;
let sockDir: string;

beforeAll(async () => {
  await requireBinary('runsc');
  await requireBinary('gcc');
  work = await tempDir('sbx');
  // The agent's rootfs: busybox plus a static Unix-socket HTTP client (busybox nc has no AF_UNIX).
  rootfs = join(work.path, 'rootfs');
  await execa('sh', [join(REPO, 'bundles/demo/build-rootfs.sh'), rootfs]);
  await execa('gcc', ['-static', '-O2', '-o', join(work.path, 'agentcall'), join(REPO, 'e2e/agentapi/fixtures/agentcall.c')]);
  await copyFile(join(work.path, 'agentcall'), join(rootfs, 'bin/agentcall'));
  await chmod(join(rootfs, 'bin/agentcall'), 0o755);
  await mkdir(join(rootfs, AGENT_API_MOUNT.slice(1)), { recursive: true });

  nats = await startNatsServer({ storeDir: join(work.path, 'nats'), port: 0 });
  nc = await connect({ servers: nats.url });
  sockDir = join(work.path, 'sandbox', 'agentapi');
  api = await startAgentApi({
    socketPath: join(sockDir, 'agent.sock'),
    identity: {
      agentId: '5d0f6f8e-2b1c-4f7a-9e3d-1a2b3c4d5e6f',
      name: 'boxed',
      namespace: 'ltaa-box',
      jwt: 'not-shown-to-the-agent',
      jwtExpiresAt: Date.now() + 3600_000,
      allowedTools: ['get_policy'],
      allowedNamespaces: [],
      enforcement: 'enforce',
    },
    nc,
    isRevoked: () => false,
    checkEgress: () => ({ verdict: 'denied' }),
    getPolicy: () => ({ version: 1, mode: 'enforce', egress: [] }),
    recordSpan: (d) => {
      spans.push(d);
    },
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

async function runInSandbox(script: string, user = { uid: 0, gid: 0 }) {
  const id = `ltaa-${randomBytes(4).toString('hex')}`;
  ids.push(id);
  const spec = buildSpec({
    args: ['sh', '-c', script],
    rootfs,
    user,
    mounts: [{ destination: AGENT_API_MOUNT, type: 'bind', source: sockDir, options: ['rbind', 'rw'] }],
  });
  const bundle = await writeBundle(join(work.path, 'bundles', id), spec);
  const { child } = await runsc.run(id, bundle.dir, { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
  const r = await child;
  return { code: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
}

describe('agent API socket inside a real runsc sandbox (--host-uds=open)', () => {
  it('an agent in gVisor reaches the bind-mounted socket: identity, an allowed tool, a refused one', async () => {
    const s = AGENT_API_SOCKET;
    const r = await runInSandbox(
      `agentcall ${s} GET /v1/identity; echo; echo ---; agentcall ${s} POST /v1/tools/get_policy '{}'; echo; echo ---; agentcall ${s} POST /v1/tools/request_egress '{"host":"example.org","port":443}'`,
      { uid: 1000, gid: 1000 },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [identity, policy, refused] = r.stdout.split('\n---\n');
    expect(identity).toMatch(/^HTTP\/1\.[01] 200/);
    expect(identity).toContain('"agentId":"5d0f6f8e-2b1c-4f7a-9e3d-1a2b3c4d5e6f"');
    expect(identity).not.toContain('not-shown-to-the-agent');
    expect(policy).toMatch(/^HTTP\/1\.[01] 200/);
    expect(policy).toContain('"policy":{"version":1');
    expect(refused).toMatch(/^HTTP\/1\.[01] 403/);
    expect(spans.map((x) => [(x as { tool: string }).tool, (x as { decision: string }).decision])).toEqual([
      ['get_policy', 'allow'],
      ['request_egress', 'deny'],
    ]);
  });
});
