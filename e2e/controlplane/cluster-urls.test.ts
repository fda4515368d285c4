import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectControlPlane, controlPlaneEndpoint, rememberServers, saveCredentials, loadCredentials, type Credentials } from '../../src/enroll/index.js';
import { freePort, startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { requireBinary, waitFor } from '../support/env.js';
import { cleanup, tempDir, wgKeyPair } from './helpers.js';

/**
 * A launcher holds every server URL it learns: given one node of a two-node nats-server cluster, it
 * learns the other from the server's INFO (connect_urls), keeps it in its stored credentials, and when
 * the node it was given is dead, comes up through the other.
 */
let dir: string;
const nodes: StartedNatsServer[] = [];

async function node(name: string, clusterPort: number, routeTo?: number): Promise<StartedNatsServer> {
  return startNatsServer({
    storeDir: join(dir, name),
    port: 0,
    writeConfig: async (listen) => {
      const conf = join(dir, `${name}.conf`);
      await writeFile(conf, [
        `listen: "${listen}"`,
        `server_name: ${name}`,
        `cluster { name: lt12b, listen: "127.0.0.1:${clusterPort}"${routeTo ? `, routes: ["nats://127.0.0.1:${routeTo}"]` : ''} }`,
        '',
      ].join('\n'));
      return conf;
    },
  });
}

beforeAll(async () => {
  await requireBinary('nats-server');
  dir = await tempDir('cluster-urls');
  const ca = await freePort();
  const cb = await freePort();
  nodes.push(await node('a', ca), await node('b', cb, ca));
});
afterAll(async () => {
  for (const n of nodes) await n.stop().catch(() => undefined);
  await cleanup(dir);
});

describe('launchers keep every server URL they learn', () => {
  it('learns the other node from INFO, stores it, and restarts through it when its node is dead', async () => {
    const [a, b] = nodes as [StartedNatsServer, StartedNatsServer];
    const keys = wgKeyPair();
    const stored: Credentials = {
      version: 1,
      name: 'roamer',
      namespace: 'n',
      agentId: 'agent-roamer',
      ...keys,
      address: { ipv4: '10.77.0.9', ipv6: 'fd77::9' },
      jwt: 'j',
      jwtExpiresAt: 0,
      allowedTools: [],
      allowedNamespaces: [],
      modes: { sandbox: 'gvisor', enforcement: 'enforce' },
      controlPlane: { url: a.url, clusterId: 'c', issuer: 'lattice:c' },
      enrolledAt: 0,
    };
    await saveCredentials(dir, stored);
    const nc = await connectControlPlane(controlPlaneEndpoint(stored), { name: 'roamer' });
    await waitFor(() => (nc.info?.connect_urls ?? []).length >= 2, 30_000, 'the cluster to announce both nodes');
    const kept = await rememberServers(dir, stored, nc, []);
    await nc.close();
    expect(kept.controlPlane.urls).toEqual([a.url, b.url]);
    expect((await loadCredentials(dir, 'roamer'))!.controlPlane.urls).toEqual([a.url, b.url]);

    await a.stop();
    const again = await connectControlPlane(controlPlaneEndpoint((await loadCredentials(dir, 'roamer'))!), { name: 'roamer', maxReconnectAttempts: 0 });
    expect(again.getServer()).toBe(b.url.replace(/^nats:\/\//, ''));
    await again.close();
  });
});
