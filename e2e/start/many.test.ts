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
  }, 420_000); // each wait above is on an event; the bound only has to hold on a loaded machine
});

describe('an IPv4-only policy and a name that resolves to both families (issue 22, item 2)', () => {
  it('busybox nc by name is refused over IPv6 and the audit line says why; a peers rule makes the name work live', async () => {
    const ns = `fam${Math.random().toString(16).slice(2, 8)}`;
    const v4Only = {
      version: 1,
      egress: [{ id: 'v4-only', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' }],
      ingress: [{ id: 'v4-only-in', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' }],
    };
    const file = join(work.path, `${ns}.json`);
    await writeFile(file, JSON.stringify(v4Only));
    const tk = await lattice(cpState, ['token', 'create', '--namespace', ns, '--limit', '2', '--policy', file, '--api', api]);
    expect(tk.exitCode, String(tk.stderr)).toBe(0);
    const t = String(tk.stdout).trim();
    const state = join(work.path, `${ns}-state`);
    const start = (name: string, script: string, env: string[] = []) => {
      const child = lattice(state, ['sandbox', 'start', '--name', name, '--token', t, '--rootfs', rootfs, ...env, '--', 'sh', '-c', `trap 'exit 0' TERM INT; ${script}`]);
      running.push(child);
      const io = { out: '', err: '' };
      child.stdout?.on('data', (d: Buffer) => (io.out += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (io.err += d.toString()));
      return { child, io };
    };
    const srv = start('srv', 'mkdir -p /tmp/w && echo page-of-srv > /tmp/w/index.html && httpd -p 8080 -h /tmp/w; while true; do sleep 0.2; done');
    await waitFor(() => /enrolled \S+ at 10\.77\.\d+\.\d+/.test(srv.io.err) || srv.child.exitCode !== null, 60_000, 'srv enrolled');
    const srv4 = /enrolled \S+ at (10\.77\.\d+\.\d+) \((fd77:[0-9a-f:]+)\)/.exec(srv.io.err);
    expect(srv4, srv.io.err).not.toBeNull();
    const get = (host: string) => `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${host} 8080 2>/dev/null | grep -q page-of-srv`;
    // Reach srv by its IPv4 address first (allowed), so the name's refusal below is the policy, not a peer still starting.
    const cli = start(
      'cli',
      `until ${get('"$SRV4"')}; do sleep 0.3; done; echo v4-reached; ` +
        `if ${get(`srv.${ns}.lattice`)}; then echo name-reached; else echo name-refused; fi; ` +
        `until ${get(`srv.${ns}.lattice`)}; do sleep 0.3; done; echo name-reached-after-policy; while true; do sleep 0.2; done`,
      ['--env', `SRV4=${srv4![1]}`],
    );
    await waitFor(() => /name-(refused|reached)/.test(cli.io.out) || cli.child.exitCode !== null, 90_000, 'cli tried the name');
    expect(cli.io.out, cli.io.err).toContain('v4-reached\nname-refused');

    // The audit line of the denial names the peer, the family and the fix.
    const note = new RegExp(
      `egress denied rule=default-deny \\(${srv4![2].replace(/\./g, '\\.')} is peer srv\\.${ns}\\.lattice's IPv6 address; its IPv4 address ${srv4![1].replace(/\./g, '\\.')} is allowed \\(rule v4-only\\) but no rule covers IPv6: add fd77::/48 \\(or the /128\\) to that rule\\)`,
    );
    let audit = '';
    await waitFor(async () => {
      audit = String((await lattice(cpState, ['audit', 'events', '--agent', `${ns}/cli`, '--type', 'flow', '--api', api])).stdout);
      return note.test(audit);
    }, 60_000, 'the denial with its explanation in the audit trail');

    // The obvious fix: a rule that names the peer covers both of its addresses, live (no restart).
    await writeFile(file, JSON.stringify({
      version: 1,
      egress: [{ id: 'to-srv', action: 'allow', peers: { name: 'srv' }, ports: [8080], protocol: 'tcp' }],
      ingress: [{ id: 'from-cli', action: 'allow', peers: { name: 'cli' }, ports: [8080], protocol: 'tcp' }],
    }));
    const set = await lattice(cpState, ['policy', 'set', ns, file, '--api', api]);
    expect(set.exitCode, String(set.stderr)).toBe(0);
    await waitFor(() => cli.io.out.includes('name-reached-after-policy') || cli.child.exitCode !== null, 90_000, 'cli reached srv by name');
    expect(cli.io.out, cli.io.err).toContain('name-reached-after-policy');
    await waitFor(async () => /-> \S+:8080 egress allowed rule=to-srv/.test(String((await lattice(cpState, ['audit', 'events', '--agent', `${ns}/cli`, '--type', 'flow', '--api', api])).stdout)), 60_000, 'the allowed flow by rule to-srv');

    for (const a of [cli, srv]) {
      a.child.kill('SIGTERM');
      expect((await a.child).exitCode, a.io.err).toBe(0);
    }
  }, 420_000); // each wait above is on an event; the bound only has to hold on a loaded machine
});
