/**
 * Policy by peer labels, end to end: real control plane (embedded nats-server), two `lattice sandbox
 * start` launchers under runsc. The client's policy allows {"peers": {"role": "db"}, "ports": [5432]};
 * the db peer is reachable while it carries role=db, cut when an operator relabels it, reachable
 * again when the label comes back, all without a policy edit.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice, CLI } from '../support/env.js';
import { waitFor } from '../support/wgpeer.js';
import { startControlPlane, type ControlPlaneFixture } from '../support/control-plane.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let cp: ControlPlaneFixture | undefined;
let natsUrl: string;
let api: string;
let cpState: string;
const running: ResultPromise[] = [];
const NS = 'e2e-labels';

const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [{ id: 'to-db', action: 'allow', peers: { role: 'db' }, ports: [5432], protocol: 'tcp' }],
  ingress: [{ id: 'db-in', action: 'allow', cidrs: ['10.77.0.0/16', 'fd77::/48'], ports: [5432], protocol: 'tcp' }],
};

async function token(extra: string[]): Promise<string> {
  const policy = join(work.path, 'policy.json');
  await writeFile(policy, JSON.stringify(POLICY));
  const r = await lattice(cpState, ['token', 'create', '--namespace', NS, '--policy', policy, '--api', api, ...extra]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return String(r.stdout).trim();
}

beforeAll(async () => {
  for (const bin of ['runsc', 'nats-server']) await requireBinary(bin);
  work = await tempDir('lt-e2e-labels');
  rootfs = await busyboxRootfs(work.path);
  cp = await startControlPlane('lt-e2e-labels-cp');
  cpState = cp.dir;
  natsUrl = cp.nats.url;
  api = cp.api;
});

afterAll(async () => {
  for (const c of running) c.kill('SIGTERM');
  await Promise.allSettled(running);
  await cp?.close();
  await work?.remove();
});

describe('policy rules that select peers by label (real control plane, real runsc)', () => {
  it('a peer enrolled with role=db is reachable; relabelled away it is cut; labelled again it is reachable', async () => {
    const tDb = await token(['--labels', 'role=db']);
    const tClient = await token([]);
    const db = lattice(join(work.path, 'state-db'), ['sandbox', 'start', '--name', 'db', '--control-plane', natsUrl, '--token', tDb, '--rootfs', rootfs, '--',
      'sh', '-c', 'mkdir -p /tmp/w && echo db-ok > /tmp/w/index.html && httpd -f -p 5432 -h /tmp/w']);
    running.push(db);
    let dbErr = '';
    db.stderr?.on('data', (d: Buffer) => (dbErr += d.toString()));
    await waitFor(async () => dbErr.includes('enrolled'), 60_000, 'db enrolled');
    const ls = await lattice(cpState, ['agent', 'ls', '--namespace', NS, '--api', api]);
    expect(String(ls.stdout)).toMatch(/db\s.*role=db/);
    const dbAddr = (JSON.parse(await readFile(join(work.path, 'state-db', 'credentials', 'db.json'), 'utf8')) as { address: { ipv6: string } }).address.ipv6;

    // The client asks forever, over IPv6 (the rule names the peer, so both families are covered). Launcher
    // stderr and agent stdout share one pipe, so the output's order is the order of the writes.
    const client = execa('sh', ['-c', 'exec "$@" 2>&1', 'sh', process.execPath, CLI, '--state-dir', join(work.path, 'state-client'),
      'sandbox', 'start', '--name', 'client', '--rootfs', rootfs, '--control-plane', natsUrl, '--token', tClient, '--',
      'sh', '-c', `while true; do if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 ${dbAddr} 5432 | grep -q db-ok; then echo ok; else echo fail; fi; sleep 0.2; done`,
    ], { reject: false });
    running.push(client);
    let out = '';
    client.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const oks = (from: number) => (out.slice(from).match(/^ok$/gm) ?? []).length;
    const fails = (from: number) => (out.slice(from).match(/^fail$/gm) ?? []).length;
    await waitFor(async () => oks(0) >= 3, 90_000, 'db reachable while it carries role=db');

    // Relabel away: the client's launcher re-binds its policy (the event), after which db is cut.
    let mark = out.length;
    const relabelledAt = performance.now();
    const r1 = await lattice(cpState, ['agent', 'label', 'db', 'role=old-db', '--namespace', NS, '--api', api]);
    expect(r1.exitCode, String(r1.stderr)).toBe(0);
    expect(String(r1.stdout)).toContain(`${NS}/db labels: role=old-db`);
    await waitFor(async () => /re-bound/.test(out.slice(mark)), 60_000, 'the client re-binds its policy');
    console.log(`relabel -> client policy re-bound: ${(performance.now() - relabelledAt).toFixed(0)} ms (wall clock, includes the CLI)`);
    const cutAt = mark + out.slice(mark).search(/re-bound/);
    await waitFor(async () => fails(cutAt) >= 3, 60_000, 'db unreachable after the relabel');
    // After the re-bind at most a request already in flight completes.
    expect(oks(cutAt)).toBeLessThanOrEqual(1);

    // The label comes back: reachable again, no policy edit.
    mark = out.length;
    const r2 = await lattice(cpState, ['agent', 'label', 'db', 'role=db', '--namespace', NS, '--api', api]);
    expect(r2.exitCode, String(r2.stderr)).toBe(0);
    await waitFor(async () => oks(mark) >= 3, 60_000, 'db reachable again after role=db is back');

    // Bad input is refused before anything is sent, each problem on its own line.
    const bad = await lattice(cpState, ['agent', 'label', 'db', 'name=x', '-bad=1', '--namespace', NS, '--api', api]);
    expect(bad.exitCode).toBe(2);
    expect(String(bad.stderr).trim().split('\n').length).toBeGreaterThanOrEqual(2);
  });
});
