/**
 * Host egress for an enrolled sandbox (`sandbox start --egress host`) against a real control plane:
 * the namespace policy allows one internet address; with --egress host the agent reaches it through
 * the launcher's network, without it the address is refused.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice } from '../support/env.js';
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from '../support/control-plane.js';
import { startInternet, WEB, type Internet } from './internet.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let cp: EmbeddedControlPlane | undefined;
let natsUrl: string;
let api: string;
let cpState: string;
let net: Internet;

const GET = `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${WEB} 443`;

async function token(namespace: string): Promise<string> {
  const policy = join(work.path, 'policy.json');
  await writeFile(policy, JSON.stringify({ version: 1, egress: [{ id: 'web', action: 'allow', cidrs: [`${WEB}/32`], ports: [443], protocol: 'tcp' }] }));
  const r = await lattice(cpState, ['token', 'create', '--namespace', namespace, '--limit', '1', '--policy', policy, '--api', api]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return String(r.stdout).trim();
}

beforeAll(async () => {
  for (const bin of ['runsc', 'nats-server', 'nft']) await requireBinary(bin);
  work = await tempDir('lt-e2e-enrolled-egress');
  rootfs = await busyboxRootfs(work.path);
  cpState = join(work.path, 'cp');
  cp = await startEmbeddedControlPlane(cpState);
  ({ natsUrl, api } = cp);
  net = await startInternet();
});

afterAll(async () => {
  await cp?.stop();
  await net?.stop();
  await work?.remove();
});

describe('host egress for an enrolled sandbox', () => {
  it('sandbox start --egress host reaches the allowed internet address; without it the address is refused', async () => {
    const withEgress = await lattice(
      join(work.path, 'state-a'),
      ['sandbox', 'start', '--name', 'a', '--control-plane', natsUrl, '--token', await token('ega'), '--egress', 'host', '--rootfs', rootfs, '--', 'sh', '-c', `${GET}; echo "web=$?"`],
      { timeout: 120_000 },
    );
    expect(withEgress.stdout, String(withEgress.stderr)).toContain(`hello from ${WEB}`);

    const without = await lattice(
      join(work.path, 'state-b'),
      ['sandbox', 'start', '--name', 'b', '--control-plane', natsUrl, '--token', await token('egb'), '--rootfs', rootfs, '--', 'sh', '-c', `${GET}; echo "web=$?"`],
      { timeout: 120_000 },
    );
    expect(without.stdout).not.toContain(`hello from ${WEB}`);
    expect(without.stdout).toMatch(/web=[1-9]/);
    expect(String(without.stderr)).toMatch(/refused/i);
  });
});
