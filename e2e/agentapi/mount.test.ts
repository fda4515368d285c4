import { readdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_API_SOCKET, agentApiMounts } from '../../src/agentapi/index.js';
import { buildSpec } from '../../src/oci/spec.js';
import { startAgentSandbox, type AgentSandbox } from '../support/agent-sandbox.js';

// /run/lattice inside the sandbox holds the agent API socket and nothing else: no host directory is
// mounted there, so the agent cannot write to the host disk through it. (The rootfs has no
// /run/lattice: the launcher's mounts make it.)

let box: AgentSandbox;

beforeAll(async () => {
  box = await startAgentSandbox({ tag: 'sbxmount', namespace: 'ltaa-mnt', allowedTools: [] });
}, 120_000);

afterAll(async () => {
  await box?.close();
});

describe('agent API mount: the socket only', () => {
  it('the agent reaches the socket, cannot write into /run/lattice, and nothing lands on the host', async () => {
    const spec = buildSpec({
      args: ['sh', '-c', `agentcall ${AGENT_API_SOCKET} GET /v1/identity; echo; echo ---; ls -A /run/lattice; echo ---; head -c 1000000 /dev/zero > /run/lattice/fill; echo "write=$?"; mkdir /run/lattice/d; echo "mkdir=$?"`],
      rootfs: box.rootfs,
      user: { uid: 1000, gid: 1000 },
      mounts: agentApiMounts(box.socketPath),
    });
    const r = await box.run('ltmnt', spec);
    const [identity, listing, writes] = r.stdout.split('\n---\n');
    expect(identity).toMatch(/^HTTP\/1\.[01] 200/);
    expect(identity).toContain('"name":"boxed"');
    expect(listing.trim()).toBe('agent.sock');
    expect(writes).toMatch(/write=1/);
    expect(writes).toMatch(/mkdir=1/);
    expect(await readdir(box.sockDir)).toEqual(['agent.sock']);
  });

  it('as root too: a read-only tmpfs refuses writes whatever the uid', async () => {
    const spec = buildSpec({
      args: ['sh', '-c', 'echo x > /run/lattice/f; echo "write=$?"; grep " /run/lattice " /proc/mounts'],
      rootfs: box.rootfs,
      mounts: agentApiMounts(box.socketPath),
    });
    const r = await box.run('ltmnt', spec);
    expect(r.stdout).toContain('write=1');
    expect(r.stdout).toMatch(/^\S+ \/run\/lattice tmpfs ro[,\s]/m);
    expect(await readdir(box.sockDir)).toEqual(['agent.sock']);
  });
});
