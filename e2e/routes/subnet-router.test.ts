/**
 * A subnet router with real components: `lattice up --advertise-routes 10.200.0.0/24` in one network
 * namespace, a plain server behind it, a gVisor sandbox on another host, the control plane in a third.
 *
 *   ns <p>-pub: br0 198.18.0.1/24        nats-server :4222, control plane (admin API on its loopback)
 *   ns <p>-r:   eth0 198.18.0.21, lan0 10.200.0.1/24   `lattice up --name gw --advertise-routes 10.200.0.0/24`
 *   ns <p>-s:   eth0 10.200.0.5/24       busybox httpd :8080, busybox nc -l :9000 (no route to the overlay)
 *   ns <p>-b:   eth0 198.18.0.22         `lattice sandbox start --name sbx` (busybox sh inside gVisor)
 *
 * Proven: before approval the sandbox cannot reach 10.200.0.5 (refused at once); after `route approve`
 * it can, and the server sees the router's address (source NAT); a long-lived TCP stream through the
 * router is cut when the route is withdrawn, and later attempts are refused; `down` leaves no table.
 * Every wait is on an event (output lines, the router's "forwarding for approved routes" line).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { busyboxRootfs, waitFor } from '../support/env.js';
import { ip } from '../../src/netns/ip.js';
import { startLab, collect, NATS, type Lab } from './lab.js';

const NS = 'ltr';
const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [{ id: 'subnet', action: 'allow', cidrs: ['10.200.0.0/24'], ports: [8080, 9000], protocol: 'tcp' }],
  // The router's own policy: forwarded flows are ingress to it, from the overlay.
  ingress: [{ id: 'via-router', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080, 9000], protocol: 'tcp' }],
};

let lab: Lab;

beforeAll(async () => {
  lab = await startLab(`ltr${randomBytes(2).toString('hex')}`, 8472, async (r, s) => {
    // The LAN behind the router: the server knows nothing of the overlay.
    await ip(['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', s], r);
    await ip(['addr', 'add', '10.200.0.1/24', 'dev', 'lan0'], r);
    await ip(['link', 'set', 'lan0', 'up'], r);
    await ip(['addr', 'add', '10.200.0.5/24', 'dev', 'eth0'], s);
    await ip(['link', 'set', 'eth0', 'up'], s);
  });
}, 180_000);

afterAll(async () => lab?.stop(), 60_000);

describe('subnet router', () => {
  it('forwards an approved route only: refused before approval, reached after (source NAT), cut on withdraw', async () => {
    const policyFile = join(lab.work, 'policy.json');
    await writeFile(policyFile, JSON.stringify(POLICY));
    const tk = await lab.admin(['token', 'create', '--namespace', NS, '--limit', '2', '--policy', policyFile]);
    expect(tk.exitCode, String(tk.stderr)).toBe(0);
    const token = String(tk.stdout).trim();

    await mkdir(join(lab.work, 'www'));
    await writeFile(join(lab.work, 'www', 'index.html'), 'hello-from-subnet\n');
    const httpd = execa('ip', ['netns', 'exec', lab.s, 'busybox', 'httpd', '-f', '-vv', '-p', '8080', '-h', join(lab.work, 'www')], { reject: false, stdin: 'ignore' });
    lab.children.push(httpd);
    const httpdLog = collect(httpd, 'stderr');
    // stdin stays open (a pipe): busybox nc closes the connection on stdin EOF.
    const stream = execa('ip', ['netns', 'exec', lab.s, 'busybox', 'nc', '-l', '-p', '9000'], { reject: false, stdin: 'pipe' });
    lab.children.push(stream);
    const streamOut = collect(stream, 'stdout');

    const up = lab.inNs(lab.r, 'state-r', ['up', '--name', 'gw', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.21', '--advertise-routes', '10.200.0.0/24']);
    lab.children.push(up);
    const upErr = collect(up, 'stderr');
    await waitFor(() => upErr().includes('is up on lattice0'), 60_000, 'lattice up');
    expect(upErr()).toContain('forwarding for approved routes: none');
    const table = String((await execa('ip', ['netns', 'exec', lab.r, 'nft', 'list', 'table', 'inet', 'lattice_router_gw'], { reject: false })).stdout);
    expect(table).toContain('masquerade');
    const pending = await lab.admin(['route', 'ls', '--namespace', NS, '--json']);
    expect(JSON.parse(String(pending.stdout))).toEqual([expect.objectContaining({ name: 'gw', cidr: '10.200.0.0/24', state: 'pending' })]);

    const rootfs = await busyboxRootfs(lab.work);
    // busybox wget crashes under gVisor here; nc speaks HTTP/1.0 well enough.
    const get = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 10.200.0.5 8080 | grep hello-from-subnet";
    const script = [
      'n=0',
      `until ${get}; do n=$((n+1)); echo refused-$n; sleep 0.3; done`,
      'echo REACHED',
      '(while true; do echo ping; sleep 0.2; done) | nc 10.200.0.5 9000',
      'echo STREAM-CLOSED',
      `while true; do if ${get} >/dev/null; then echo after-reached; else echo after-refused; fi; sleep 0.3; done`,
    ].join('\n');
    const sbx = lab.inNs(lab.b, 'state-b', ['sandbox', 'start', '--name', 'sbx', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.22', '--rootfs', rootfs, '--', 'sh', '-c', script]);
    lab.children.push(sbx);
    const out = collect(sbx, 'stdout');
    const err = collect(sbx, 'stderr');
    const ctx = () => `sandbox: ${out().slice(-300)} ${err().slice(-400)} / up: ${upErr().slice(-600)}`;
    // Before approval: every attempt is refused (the sandbox has no route; the router would not forward).
    await waitFor(() => out().includes('refused-3'), 90_000, `three refused attempts before approval (${ctx()})`);
    expect(out()).not.toContain('hello-from-subnet');

    const ok = await lab.admin(['route', 'approve', `${NS}/gw`, '10.200.0.0/24']);
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    await waitFor(() => upErr().includes('forwarding for approved routes: 10.200.0.0/24'), 30_000, `the router hearing the approval (${ctx()})`);
    await waitFor(() => out().includes('REACHED'), 60_000, `the sandbox reaching the server behind the router (${ctx()})`);
    expect(out()).toContain('hello-from-subnet');
    // Source NAT: the server saw the router's LAN address, not the sandbox's overlay address.
    expect(httpdLog()).toContain('10.200.0.1');
    expect(httpdLog()).not.toMatch(/10\.77\.\d+\.\d+/);
    await waitFor(() => (streamOut().match(/ping/g) ?? []).length >= 3, 30_000, 'the stream through the router flowing');

    const wd = await lab.admin(['route', 'withdraw', `${NS}/gw`, '10.200.0.0/24']);
    expect(wd.exitCode, String(wd.stderr)).toBe(0);
    // The open stream is cut (the agent's next segment gets a reset), and later attempts are refused.
    await waitFor(() => out().includes('STREAM-CLOSED'), 30_000, `the open flow cut on withdraw (${ctx()})`);
    await waitFor(() => (out().match(/after-refused/g) ?? []).length >= 2, 60_000, `attempts after the withdraw refused (${ctx()})`);
    expect(out()).not.toContain('after-reached');
    await waitFor(() => upErr().includes('forwarding for approved routes: none'), 30_000, 'the router hearing the withdraw');

    sbx.kill('SIGTERM');
    await sbx;
    const down = await lab.inNs(lab.r, 'state-r', ['down', '--name', 'gw']);
    expect(down.exitCode, String(down.stderr)).toBe(0);
    expect((await up).exitCode, upErr().slice(-800)).toBe(0);
    expect(String((await execa('ip', ['netns', 'exec', lab.r, 'nft', 'list', 'tables'])).stdout)).not.toContain('lattice');
  }, 300_000);
});
