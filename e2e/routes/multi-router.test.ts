/**
 * Two subnet routers reach each other's subnets: each `lattice up` routes the approved routes of other
 * peers into its own TUN (src/host/routes.ts), never its own. Real components: nftables, nats-server,
 * the control plane, two `lattice up` processes, busybox servers on each LAN.
 *
 *   ns <p>-pub: br0 198.18.0.1/24        nats-server :4222, control plane (admin API on its loopback)
 *   ns <p>-r:   eth0 198.18.0.21, lan0 10.200.0.1/24   `lattice up --name gw-r --advertise-routes 10.200.0.0/24`
 *   ns <p>-s:   eth0 10.200.0.5/24       busybox httpd :8080, busybox nc -l :9000 (behind R)
 *   ns <p>-b:   eth0 198.18.0.22, lan0 10.201.0.1/24   `lattice up --name gw-b --advertise-routes 10.201.0.0/24`
 *   ns <p>-t:   eth0 10.201.0.5/24       busybox httpd :8080 (behind B)
 *
 * Proven: before approval B has no kernel route to 10.200.0.0/24 and cannot reach the server; after
 * both routes are approved B reaches 10.200.0.5 and R reaches 10.201.0.5 from their own host stacks
 * (source NAT at the far router), each routes only the other's subnet into lattice0 (its own stays on
 * its LAN), the policy still decides (port 9000 is not allowed: refused); after R's route is withdrawn
 * B's route is gone and the server unreachable; `down` leaves no route, link or table. Every wait is on
 * an event (the launchers' "routes via peers" lines, command results).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, waitFor } from '../support/env.js';
import { createNetns, deleteNetns, ip } from '../../src/netns/ip.js';
import { startLab, collect, NATS, type Lab } from './lab.js';

const NS = 'ltm';
const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [{ id: 'subnets', action: 'allow', cidrs: ['10.200.0.0/24', '10.201.0.0/24'], ports: [8080], protocol: 'tcp' }],
  // Forwarded flows are ingress to the router that forwards them.
  ingress: [{ id: 'via-router', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080, 9000], protocol: 'tcp' }],
};
const PREFIX = `ltm${randomBytes(2).toString('hex')}`;
const T = `${PREFIX}-t`;

let lab: Lab;
let tMade = false;

/** A LAN behind router netns `r`: lan0 `<net>.1/24` there, eth0 `<net>.5/24` in `s`. */
async function lan(r: string, s: string, net: string): Promise<void> {
  await ip(['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', s], r);
  await ip(['addr', 'add', `${net}.1/24`, 'dev', 'lan0'], r);
  await ip(['link', 'set', 'lan0', 'up'], r);
  await ip(['addr', 'add', `${net}.5/24`, 'dev', 'eth0'], s);
  await ip(['link', 'set', 'eth0', 'up'], s);
  await ip(['link', 'set', 'lo', 'up'], s);
}

beforeAll(async () => {
  await requireBinary('curl');
  lab = await startLab(PREFIX, 8474, (r, s) => lan(r, s, '10.200.0'));
  await createNetns(T);
  tMade = true;
  await lan(lab.b, T, '10.201.0');
}, 180_000);

afterAll(async () => {
  await lab?.stop();
  if (tMade) await deleteNetns(T).catch(() => undefined);
}, 60_000);

/** curl from netns `ns`'s own stack (not a sandbox; busybox wget segfaults here): the body, or undefined when it fails. */
async function get(ns: string, url: string): Promise<string | undefined> {
  const r = await execa('ip', ['netns', 'exec', ns, 'curl', '-s', '-m', '3', url], { reject: false, stdin: 'ignore' });
  return r.exitCode === 0 ? String(r.stdout) : undefined;
}
const tunRoutes = async (ns: string) => String((await execa('ip', ['netns', 'exec', ns, 'ip', '-4', 'route', 'show', 'dev', 'lattice0'], { reject: false })).stdout);
const count = (text: string, what: string) => text.split(what).length - 1;

describe('two subnet routers', () => {
  it('each reaches the subnet behind the other once approved, not before, not after withdraw; its own subnet stays local', async () => {
    const policyFile = join(lab.work, 'policy.json');
    await writeFile(policyFile, JSON.stringify(POLICY));
    const tk = await lab.admin(['token', 'create', '--namespace', NS, '--limit', '2', '--policy', policyFile]);
    expect(tk.exitCode, String(tk.stderr)).toBe(0);
    const token = String(tk.stdout).trim();

    for (const [ns, body] of [[lab.s, 'hello-behind-r'], [T, 'hello-behind-b']] as const) {
      const www = join(lab.work, `www-${ns}`);
      await mkdir(www);
      await writeFile(join(www, 'index.html'), `${body}\n`);
      lab.children.push(execa('ip', ['netns', 'exec', ns, 'busybox', 'httpd', '-f', '-p', '8080', '-h', www], { reject: false, stdin: 'ignore' }));
    }
    // stdin stays open (a pipe): busybox nc closes the connection on stdin EOF.
    const nc = execa('ip', ['netns', 'exec', lab.s, 'busybox', 'nc', '-l', '-p', '9000'], { reject: false, stdin: 'pipe' });
    lab.children.push(nc);
    // The servers answer on their LANs before anything is asserted about the overlay.
    await waitFor(async () => (await get(lab.r, 'http://10.200.0.5:8080/'))?.includes('hello-behind-r') === true, 30_000, 'httpd behind R');
    await waitFor(async () => (await get(lab.b, 'http://10.201.0.5:8080/'))?.includes('hello-behind-b') === true, 30_000, 'httpd behind B');

    const upR = lab.inNs(lab.r, 'state-r', ['up', '--name', 'gw-r', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.21', '--advertise-routes', '10.200.0.0/24']);
    lab.children.push(upR);
    const errR = collect(upR, 'stderr');
    await waitFor(() => errR().includes('is up on lattice0'), 60_000, `lattice up R (${errR().slice(-600)})`);
    const upB = lab.inNs(lab.b, 'state-b', ['up', '--name', 'gw-b', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.22', '--advertise-routes', '10.201.0.0/24']);
    lab.children.push(upB);
    const errB = collect(upB, 'stderr');
    await waitFor(() => errB().includes('is up on lattice0'), 60_000, `lattice up B (${errB().slice(-600)})`);
    const ctx = () => `R: ${errR().slice(-500)} / B: ${errB().slice(-500)}`;

    // Before approval: no kernel route, no answer.
    expect(errB()).toContain('routes via peers: none');
    expect(await tunRoutes(lab.b)).not.toContain('10.200.0.0/24');
    expect(await get(lab.b, 'http://10.200.0.5:8080/')).toBeUndefined();

    for (const [who, cidr] of [['gw-r', '10.200.0.0/24'], ['gw-b', '10.201.0.0/24']] as const) {
      const ok = await lab.admin(['route', 'approve', `${NS}/${who}`, cidr]);
      expect(ok.exitCode, String(ok.stderr)).toBe(0);
    }
    await waitFor(() => errB().includes('routes via peers: 10.200.0.0/24'), 30_000, `B routing R's subnet (${ctx()})`);
    await waitFor(() => errR().includes('routes via peers: 10.201.0.0/24'), 30_000, `R routing B's subnet (${ctx()})`);
    await waitFor(() => errR().includes('forwarding for approved routes: 10.200.0.0/24'), 30_000, `R forwarding (${ctx()})`);
    await waitFor(() => errB().includes('forwarding for approved routes: 10.201.0.0/24'), 30_000, `B forwarding (${ctx()})`);
    // Longest prefix in the kernel: the other's subnet via lattice0 (from the overlay address), its own on the LAN.
    expect(await tunRoutes(lab.b)).toMatch(/10\.200\.0\.0\/24 scope link src 10\.77\./);
    expect(await tunRoutes(lab.b)).not.toContain('10.201.0.0/24');
    expect(await tunRoutes(lab.r)).not.toContain('10.200.0.0/24');
    expect(String((await execa('ip', ['netns', 'exec', lab.b, 'ip', 'route', 'get', '10.201.0.5'])).stdout)).toContain('dev lan0');

    // The first packets may race the handshake: wait on the answer itself, then every later try must work.
    await waitFor(async () => (await get(lab.b, 'http://10.200.0.5:8080/'))?.includes('hello-behind-r') === true, 30_000, `B reaching 10.200.0.5 (${ctx()})`);
    await waitFor(async () => (await get(lab.r, 'http://10.201.0.5:8080/'))?.includes('hello-behind-b') === true, 30_000, `R reaching 10.201.0.5 (${ctx()})`);
    const st = await lab.inNs(lab.b, 'state-b', ['status', '--name', 'gw-b', '--json']);
    expect(st.exitCode, String(st.stderr)).toBe(0);
    expect(JSON.parse(String(st.stdout))).toMatchObject({ peerRoutes: ['10.200.0.0/24'], advertised: ['10.201.0.0/24'] });
    // Policy permitting: port 9000 is not in B's egress rules, so the route alone does not open it.
    const denied = await execa('ip', ['netns', 'exec', lab.b, 'busybox', 'nc', '-w', '3', '10.200.0.5', '9000'], { reject: false, input: 'x\n' });
    expect(denied.exitCode).not.toBe(0);

    const wd = await lab.admin(['route', 'withdraw', `${NS}/gw-r`, '10.200.0.0/24']);
    expect(wd.exitCode, String(wd.stderr)).toBe(0);
    await waitFor(() => count(errB(), 'routes via peers: none') >= 2, 30_000, `B dropping R's withdrawn route (${ctx()})`);
    expect(await tunRoutes(lab.b)).not.toContain('10.200.0.0/24');
    expect(await get(lab.b, 'http://10.200.0.5:8080/')).toBeUndefined();
    // B's own route is untouched by R's withdraw.
    expect(await get(lab.r, 'http://10.201.0.5:8080/')).toContain('hello-behind-b');

    for (const [ns, state, name, up] of [[lab.r, 'state-r', 'gw-r', upR], [lab.b, 'state-b', 'gw-b', upB]] as const) {
      const down = await lab.inNs(ns, state, ['down', '--name', name]);
      expect(down.exitCode, String(down.stderr)).toBe(0);
      expect((await up).exitCode, ctx()).toBe(0);
      expect(String((await execa('ip', ['netns', 'exec', ns, 'ip', 'link', 'show'])).stdout)).not.toContain('lattice0');
      expect(String((await execa('ip', ['netns', 'exec', ns, 'ip', '-4', 'route', 'show'])).stdout)).not.toMatch(/10\.77\.|10\.20[01]\.0\.0\/24 .*lattice0/);
      expect(String((await execa('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables'])).stdout)).not.toContain('lattice');
    }
  }, 300_000);
});
