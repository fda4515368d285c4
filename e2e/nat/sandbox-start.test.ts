/**
 * `lattice sandbox start --stun` on the host: a control plane, coturn (STUN only) on loopback and two
 * enrolled sandboxes with NAT traversal on. Traffic flows between them over the overlay and
 * `lattice sandbox status --json` reports the path in use (direct), its RTT and its time to establish.
 * (Running the launchers inside NAT'd site namespaces needs `ip netns exec`, which breaks runsc.)
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice } from '../support/env.js';
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from '../support/control-plane.js';
import { waitFor } from '../support/wgpeer.js';
import { freePort } from '../../src/natsserver/server.js';
import type { SandboxStatus } from '../../src/sandbox/nat-status.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let cp: EmbeddedControlPlane | undefined;
let turn: ResultPromise | undefined;
let natsUrl: string;
let api: string;
let cpState: string;
let stunPort: number;
const running: ResultPromise[] = [];

const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [{ id: 'http', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' }],
  ingress: [{ id: 'http-in', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' }],
};

const stateOf = (name: string) => join(work.path, `state-${name}`);

function start(name: string, args: string[], cmd: string[]): { child: ResultPromise; out: () => string; err: () => string } {
  const child = lattice(stateOf(name), ['sandbox', 'start', '--name', name, '--rootfs', rootfs, ...args, '--', ...cmd]);
  running.push(child);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return { child, out: () => out, err: () => err };
}

async function status(name: string): Promise<SandboxStatus | undefined> {
  const r = await lattice(stateOf(name), ['sandbox', 'status', name, '--json']);
  return r.exitCode === 0 ? (JSON.parse(String(r.stdout)) as SandboxStatus) : undefined;
}

beforeAll(async () => {
  for (const bin of ['runsc', 'nats-server', 'turnserver']) await requireBinary(bin);
  work = await tempDir('ltnw-e2e');
  rootfs = await busyboxRootfs(work.path);
  cpState = join(work.path, 'cp');
  stunPort = await freePort();

  const conf = join(work.path, 'turnserver.conf');
  await writeFile(
    conf,
    [
      'listening-ip=127.0.0.1',
      `listening-port=${stunPort}`,
      'stun-only',
      'no-tls',
      'no-dtls',
      'no-cli',
      `pidfile=${join(work.path, 'turnserver.pid')}`,
      `userdb=${join(work.path, 'turndb')}`,
      `log-file=${join(work.path, 'turn.log')}`,
      'simple-log',
      '',
    ].join('\n'),
  );
  turn = execa('turnserver', ['-c', conf], { reject: false, stdin: 'ignore' });

  cp = await startEmbeddedControlPlane(cpState);
  ({ natsUrl, api } = cp);
}, 120_000);

afterAll(async () => {
  for (const c of running) c.kill('SIGTERM');
  await Promise.allSettled(running);
  turn?.kill('SIGTERM');
  await Promise.allSettled([cp?.stop(), turn]);
  await work?.remove();
});

describe('lattice sandbox start with NAT traversal (--stun)', () => {
  it('carries traffic between two sandboxes and reports the direct path with RTT in sandbox status', async () => {
    const policy = join(work.path, 'policy.json');
    await writeFile(policy, JSON.stringify(POLICY));
    const tk = await lattice(cpState, ['token', 'create', '--namespace', 'ltnw', '--limit', '2', '--policy', policy, '--api', api]);
    expect(tk.exitCode, String(tk.stderr)).toBe(0);
    const t = String(tk.stdout).trim();
    const stun = ['--stun', `stun:127.0.0.1:${stunPort}`];

    const web = start('ltnw-web', ['--control-plane', natsUrl, '--token', t, ...stun], ['sh', '-c', 'mkdir -p /tmp/w && echo hello-nat > /tmp/w/index.html && httpd -f -p 8080 -h /tmp/w']);
    await waitFor(async () => web.err().includes('enrolled'), 60_000, 'web enrolled');
    const webAddr = (JSON.parse(await readFile(join(stateOf('ltnw-web'), 'credentials', 'ltnw-web.json'), 'utf8')) as { address: { ipv4: string } }).address.ipv4;
    const client = start('ltnw-client', ['--control-plane', natsUrl, '--token', t, ...stun], [
      'sh', '-c', `while true; do if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 1 ${webAddr} 8080 | grep -q hello-nat; then echo ok; else echo fail; fi; sleep 0.2; done`,
    ]);
    await waitFor(async () => (client.out().match(/ok/g) ?? []).length >= 3, 60_000, `traffic between the sandboxes (client stderr: ${client.err().slice(-800)})`);

    // The NAT layer found and selected a direct path, with an RTT and a time to establish.
    let s: SandboxStatus | undefined;
    await waitFor(async () => {
      s = await status('ltnw-client');
      const p = s?.peers.find((x) => x.name === 'ltnw-web');
      // The agent keeps requesting until the test stops it, so the peer's counters move on whichever path is current.
      return p?.path?.kind === 'direct' && p.path.rttMs !== null && p.path.establishMs !== null && p.latestHandshake !== null && p.rxBytes > 0 && p.txBytes > 0;
    }, 60_000, `direct path and traffic in sandbox status (last: ${JSON.stringify(s)})`);
    expect(s!.natTraversal).toBe(true);
    expect(s!.candidates?.some((c) => c.type === 'srflx' && c.address === '127.0.0.1')).toBe(true);
    const peer = s!.peers.find((x) => x.name === 'ltnw-web')!;
    expect(peer.rxBytes).toBeGreaterThan(0);
    expect(peer.txBytes).toBeGreaterThan(0);
    console.log(`ltnw: direct path rtt=${peer.path!.rttMs} ms established in ${peer.path!.establishMs} ms`);

    // The web side sees the client too.
    await waitFor(async () => (await status('ltnw-web'))?.peers.find((x) => x.name === 'ltnw-client')?.path?.kind === 'direct', 60_000, 'direct path on the web side');

    // The table names the peer and the path; the file holds no private key.
    const table = await lattice(stateOf('ltnw-client'), ['sandbox', 'status']);
    expect(table.exitCode, String(table.stderr)).toBe(0);
    expect(String(table.stdout)).toMatch(/^SANDBOX\s+PEER\s+ENDPOINT\s+HANDSHAKE\s+RX\s+TX\s+PATH\s+RTT\s+ESTABLISHED/);
    expect(String(table.stdout)).toMatch(/ltnw-web\s+\S+\s+\d+s ago .* direct\/udp\s+\d+ ms\s+\d+ ms/);
    const creds = JSON.parse(await readFile(join(stateOf('ltnw-client'), 'credentials', 'ltnw-client.json'), 'utf8')) as { privateKey: string };
    const raw = JSON.stringify(await status('ltnw-client'));
    expect(raw).not.toContain(creds.privateKey);

    // Unknown sandbox: one-line error.
    const missing = await lattice(stateOf('ltnw-client'), ['sandbox', 'status', 'ltnw-nope']);
    expect(missing.exitCode).not.toBe(0);
    expect(String(missing.stderr).trim().split('\n')).toHaveLength(1);

    // On exit the status goes away with the sandbox.
    web.child.kill('SIGTERM');
    const r = await web.child;
    expect(r.exitCode).not.toBeNull();
    expect(await status('ltnw-web')).toBeUndefined();
  }, 150_000);
});
