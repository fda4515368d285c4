/**
 * Many agents on one host (issue 22, item 1): three `sandbox start` with ONE state dir, side by side.
 * Each enrolls once, all three reach each other by name, a second launcher of a running name is refused
 * before it spends anything, and each stop is clean (exit 0, no container, netns, record or lock left).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { readdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice } from '../support/env.js';
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from '../support/control-plane.js';
import { waitFor } from '../support/wgpeer.js';

const NS = `many${Math.random().toString(16).slice(2, 8)}`;
const NAMES = ['web', 'third', 'fourth'] as const;
const POLICY = {
  version: 1,
  egress: [{ id: 'overlay-http', action: 'allow', cidrs: ['10.77.0.0/16', 'fd77::/48'], ports: [8080], protocol: 'tcp' }],
  ingress: [{ id: 'overlay-http-in', action: 'allow', cidrs: ['10.77.0.0/16', 'fd77::/48'], ports: [8080], protocol: 'tcp' }],
};

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let cp: EmbeddedControlPlane | undefined;
let natsUrl: string;
let api: string;
let cpState: string;
let shared: string;
const running: ResultPromise[] = [];

async function token(limit: number): Promise<string> {
  const policy = join(work.path, 'policy.json');
  await writeFile(policy, JSON.stringify(POLICY));
  const r = await lattice(cpState, ['token', 'create', '--namespace', NS, '--limit', String(limit), '--policy', policy, '--api', api]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return String(r.stdout).trim();
}

/** Serve our name on 8080, fetch every other agent's page by overlay name, then wait for the stop signal. */
function agentScript(self: string): string {
  const others = NAMES.filter((n) => n !== self).join(' ');
  return (
    `trap 'echo stopping; exit 0' TERM INT; mkdir -p /tmp/w && echo "page-of-${self}" > /tmp/w/index.html && httpd -p 8080 -h /tmp/w; ` +
    `for p in ${others}; do until printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 "$p.${NS}.lattice" 8080 2>/dev/null | grep -q "page-of-$p"; do sleep 0.3; done; echo "reached $p"; done; ` +
    `echo all-reached; while true; do sleep 0.2; done`
  );
}

beforeAll(async () => {
  for (const bin of ['runsc', 'nats-server']) await requireBinary(bin);
  work = await tempDir('lt-e2e-many');
  rootfs = await busyboxRootfs(work.path);
  cpState = join(work.path, 'cp');
  shared = join(work.path, 'shared-state');
  cp = await startEmbeddedControlPlane(cpState);
  ({ natsUrl, api } = cp);
});

afterAll(async () => {
  // After a failure: stop what still runs (SIGTERM lets each launcher remove its sandbox), then reap.
  for (const c of running) c.kill('SIGTERM');
  await Promise.race([Promise.allSettled(running), new Promise((r) => setTimeout(r, 15_000))]);
  if (shared) await lattice(shared, ['gc']);
  await cp?.stop();
  await work?.remove();
});

describe('three `sandbox start` sharing one state dir', () => {
  it('each enrolls once, all reach each other, a duplicate name spends nothing, each stop is clean', async () => {
    const t = await token(NAMES.length);
    const agents = NAMES.map((name) => {
      const child = lattice(shared, ['sandbox', 'start', '--name', name, '--control-plane', natsUrl, '--token', t, '--rootfs', rootfs, '--', 'sh', '-c', agentScript(name)]);
      running.push(child);
      const io = { out: '', err: '' };
      child.stdout?.on('data', (d: Buffer) => (io.out += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (io.err += d.toString()));
      return { name, child, io };
    });
    const exited = agents.map((a) => a.child.then((r) => `${a.name} exited early (${r.exitCode}): ${a.io.err}`));
    const allReached = waitFor(async () => agents.every((a) => a.io.out.includes('all-reached')), 90_000, 'every agent reached both others');
    // Fail fast, with the launcher's own words, if one of them gives up instead.
    const early = Promise.race(exited).then((msg) => {
      throw new Error(msg);
    });
    await Promise.race([allReached, early]);
    for (const a of agents) for (const other of NAMES.filter((n) => n !== a.name)) expect(a.io.out).toContain(`reached ${other}`);

    // A second launcher of a running name is refused before it spends a token (t2 still enrolls `spare`).
    const t2 = await token(1);
    const dup = await lattice(shared, ['sandbox', 'start', '--name', 'web', '--control-plane', natsUrl, '--token', t2, '--rootfs', rootfs, '--', 'true']);
    expect(dup.exitCode).toBe(125);
    expect(String(dup.stderr).trim().split('\n')).toEqual([expect.stringMatching(/^lattice: agent web already runs from this state dir \(launcher pid \d+\); stop it first/)]);
    const spare = await lattice(shared, ['sandbox', 'start', '--name', 'spare', '--control-plane', natsUrl, '--token', t2, '--rootfs', rootfs, '--', 'true']);
    expect(spare.exitCode, String(spare.stderr)).toBe(0);

    // Each enrolled exactly once, active, with the endpoint it published.
    const ls = await lattice(cpState, ['agent', 'ls', '--namespace', NS, '--json', '--api', api]);
    const listed = JSON.parse(String(ls.stdout)) as Array<{ name: string; status: string; endpoint?: string }>;
    expect(listed.map((a) => a.name).sort()).toEqual([...NAMES, 'spare'].sort());
    for (const a of listed.filter((x) => x.name !== 'spare')) {
      expect(a.status).toBe('active');
      expect(a.endpoint).toMatch(/^127\.0\.0\.1:\d+$/);
    }
    const records = JSON.parse(String((await lattice(shared, ['sandbox', 'ls', '--json'])).stdout)) as Array<{ id: string; name: string; status: string }>;
    expect(records.map((r) => r.name).sort()).toEqual([...NAMES].sort());
    expect(records.every((r) => r.status === 'running')).toBe(true);

    // Each stop is clean: the agent's own exit code (0 from its trap), nothing left behind.
    for (const a of agents) {
      a.child.kill('SIGTERM');
      const r = await a.child;
      expect(r.exitCode, a.io.err).toBe(0);
      expect(a.io.out).toContain('stopping');
      expect(existsSync(join(shared, 'outbox', a.name, 'lock'))).toBe(false);
    }
    const containers = await execa('runsc', ['--root', join(shared, 'runsc'), 'list', '-quiet'], { reject: false });
    expect(String(containers.stdout).trim()).toBe('');
    expect(await readdir(join(shared, 'sandboxes'))).toEqual([]);
    const netns = String((await execa('ip', ['netns', 'list'])).stdout);
    for (const r of records) expect(netns).not.toContain(r.id);
  });
});
