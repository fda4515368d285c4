import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { connect, type NatsConnection } from 'nats';
import { AGENT_API_MOUNT, startAgentApi, type StartedAgentApi } from '../../src/agentapi/index.js';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { writeBundle } from '../../src/oci/bundle.js';
import type { OciSpec } from '../../src/oci/spec.js';
import { Runsc } from '../../src/runsc/client.js';
import { REPO, requireBinary, tempDir } from './env.js';

/**
 * One agent API served on a Unix socket to real runsc sandboxes (--host-uds=open, no network), with a
 * nats-server behind it: the fixture of the agent-API-in-gVisor tests. The rootfs is busybox plus
 * `agentcall`, a static Unix-socket HTTP client (busybox nc has no AF_UNIX). The agent is `boxed` in
 * `namespace`, with agent id 5d0f6f8e-2b1c-4f7a-9e3d-1a2b3c4d5e6f and a JWT the agent must never see
 * ("not-shown-to-the-agent").
 */
export interface AgentSandbox {
  readonly rootfs: string;
  /** The host directory holding agent.sock (what a bind mount of AGENT_API_MOUNT would expose). */
  readonly sockDir: string;
  readonly socketPath: string;
  readonly api: StartedAgentApi;
  /** Run `spec` (built with `rootfs`) in a fresh container named `<idPrefix>-<random>`; waits for its exit. */
  run(idPrefix: string, spec: OciSpec): Promise<{ code: number | undefined; stdout: string; stderr: string }>;
  /** Delete the containers, stop the API, NATS and remove the files. */
  close(): Promise<void>;
}

export async function startAgentSandbox(o: {
  tag: string;
  namespace: string;
  allowedTools: string[];
  /** Create AGENT_API_MOUNT in the rootfs (for tests that bind-mount the socket directory there). */
  mountPoint?: boolean;
  recordSpan?: (d: AuditEventDraft) => void;
}): Promise<AgentSandbox> {
  await requireBinary('runsc');
  await requireBinary('gcc');
  const work = await tempDir(`ltaa-${o.tag}`);
  const ids: string[] = [];
  let nats: StartedNatsServer | undefined;
  let nc: NatsConnection | undefined;
  let api: StartedAgentApi | undefined;
  const close = async (): Promise<void> => {
    for (const id of ids) await execa('runsc', ['--root', join(work.path, 'runsc'), 'delete', '-force', id], { reject: false });
    await api?.close();
    await nc?.close();
    await nats?.stop();
    await work.remove();
  };
  try {
    const rootfs = join(work.path, 'rootfs');
    await execa('sh', [join(REPO, 'bundles/demo/build-rootfs.sh'), rootfs]);
    await execa('gcc', ['-static', '-O2', '-o', join(work.path, 'agentcall'), join(REPO, 'e2e/agentapi/fixtures/agentcall.c')]);
    await copyFile(join(work.path, 'agentcall'), join(rootfs, 'bin/agentcall'));
    await chmod(join(rootfs, 'bin/agentcall'), 0o755);
    if (o.mountPoint) await mkdir(join(rootfs, AGENT_API_MOUNT.slice(1)), { recursive: true });
    nats = await startNatsServer({ storeDir: join(work.path, 'nats'), port: 0 });
    nc = await connect({ servers: nats.url });
    const sockDir = join(work.path, 'sandbox', 'agentapi');
    const socketPath = join(sockDir, 'agent.sock');
    api = await startAgentApi({
      socketPath,
      identity: {
        agentId: '5d0f6f8e-2b1c-4f7a-9e3d-1a2b3c4d5e6f',
        name: 'boxed',
        namespace: o.namespace,
        jwt: 'not-shown-to-the-agent',
        jwtExpiresAt: Date.now() + 3600_000,
        allowedTools: o.allowedTools,
        allowedNamespaces: [],
        enforcement: 'enforce',
      },
      nc,
      isRevoked: () => false,
      checkEgress: () => ({ verdict: 'denied' }),
      getPolicy: () => ({ version: 1, mode: 'enforce', egress: [] }),
      recordSpan: o.recordSpan ?? (() => undefined),
    });
    const runsc = new Runsc({ root: join(work.path, 'runsc'), network: 'none', hostUds: true });
    const started = api;
    return {
      rootfs,
      sockDir,
      socketPath,
      api: started,
      async run(idPrefix, spec) {
        const id = `${idPrefix}-${randomBytes(4).toString('hex')}`;
        ids.push(id);
        const bundle = await writeBundle(join(work.path, 'bundles', id), spec);
        const { child } = await runsc.run(id, bundle.dir, { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
        const r = await child;
        return { code: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
