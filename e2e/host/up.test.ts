/**
 * `lattice up` / `status` / `down` with real components. Three network namespaces on one bridge
 * (prefix lth<random>): "pub" holds nats-server and the control plane, "a" is a plain Linux host that
 * joins with `lattice up`, "b" runs `lattice sandbox start` (gVisor). The launchers enter their netns with
 * `nsenter --net` (runsc breaks under `ip netns exec`).
 *
 *   ns <p>-pub: br0 198.18.0.1/24 (nats-server :4222, control plane, admin API on its loopback)
 *   ns <p>-a:   eth0 198.18.0.21  `lattice up --name hosta` (TUN lattice0), busybox httpd :8081
 *   ns <p>-b:   eth0 198.18.0.22  `lattice sandbox start --name sbx` (httpd :8080 inside the sandbox)
 *
 *   ns <p>-c:   eth0 198.18.0.23  wireguard-go, configured by hand, a static peer in the directory
 *
 * Proven: both directions by overlay name under the namespace policy (8080/8081 only: another port is
 * refused), `lattice status` shows the peer's handshake and path, `lattice down` from another process
 * stops `up` and leaves no link, no route, no nftables table and no runtime files behind; a restarted
 * `up` reuses its identity, and a plain wireguard-go host added with `peer add-static` reaches it (and back).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, requireRoot, tempDir, busyboxRootfs, waitFor, CLI } from '../support/env.js';
import { createNetns, deleteNetns, ip } from '../../src/netns/ip.js';
import type { HostStatus } from '../../src/host/up.js';

const P = `lth${randomBytes(2).toString('hex')}`;
const PUB = `${P}-pub`;
const A = `${P}-a`;
const B = `${P}-b`;
const C = `${P}-c`;
const WG_IF = `${P}wg`;
const NATS = 'nats://198.18.0.1:4222';
const HTTP_PORT = 8471;
const NS = 'lth';
const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [{ id: 'web', action: 'allow', cidrs: ['10.77.0.0/16', 'fd77::/16'], ports: [8080, 8081], protocol: 'tcp' }],
  ingress: [{ id: 'web-in', action: 'allow', cidrs: ['10.77.0.0/16', 'fd77::/16'], ports: [8080, 8081], protocol: 'tcp' }],
};

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let token: string;
let cpState: string;
const children: ResultPromise[] = [];
const made: string[] = [];

/** The CLI inside netns `ns` with its own state dir. */
function inNs(ns: string, stateDir: string, args: string[]) {
  return execa('nsenter', [`--net=/var/run/netns/${ns}`, process.execPath, CLI, '--state-dir', stateDir, ...args], { reject: false, stdin: 'ignore' });
}
const sh = (ns: string, cmd: string) => execa('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { reject: false, stdin: 'ignore' });
const stateA = () => join(work.path, 'state-a');

beforeAll(async () => {
  requireRoot();
  for (const bin of ['runsc', 'nats-server', 'nft', 'nsenter', 'busybox', 'curl', 'wireguard-go', 'wg']) await requireBinary(bin);
  work = await tempDir(`lt-e2e-${P}`);
  rootfs = await busyboxRootfs(work.path);
  for (const n of [PUB, A, B, C]) {
    await createNetns(n);
    made.push(n);
    await ip(['link', 'set', 'lo', 'up'], n);
  }
  await ip(['link', 'add', 'br0', 'type', 'bridge'], PUB);
  await ip(['addr', 'add', '198.18.0.1/24', 'dev', 'br0'], PUB);
  await ip(['link', 'set', 'br0', 'up'], PUB);
  for (const [n, addr, side] of [[A, '198.18.0.21', 'ha'], [B, '198.18.0.22', 'hb'], [C, '198.18.0.23', 'hc']] as const) {
    await ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', side, 'netns', PUB], n);
    await ip(['link', 'set', side, 'master', 'br0', 'up'], PUB);
    await ip(['addr', 'add', `${addr}/24`, 'dev', 'eth0'], n);
    await ip(['link', 'set', 'eth0', 'up'], n);
  }
  const jsDir = join(work.path, 'js');
  await mkdir(jsDir);
  children.push(execa('nsenter', [`--net=/var/run/netns/${PUB}`, 'nats-server', '-a', '198.18.0.1', '-p', '4222', '-js', '-sd', jsDir], { reject: false, stdin: 'ignore' }));
  await waitFor(async () => (await execa('nsenter', [`--net=/var/run/netns/${PUB}`, 'bash', '-c', 'exec 3<>/dev/tcp/198.18.0.1/4222'], { reject: false })).exitCode === 0, 60_000, 'nats-server');
  cpState = join(work.path, 'cp');
  const cp = inNs(PUB, cpState, ['control-plane', 'start', '--nats', NATS, '--http', `127.0.0.1:${HTTP_PORT}`]);
  children.push(cp);
  let out = '';
  cp.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('control plane ready'), 60_000, 'control plane ready');
  const policy = join(work.path, 'policy.json');
  await writeFile(policy, JSON.stringify(POLICY));
  const tk = await inNs(PUB, cpState, ['token', 'create', '--namespace', NS, '--limit', '4', '--policy', policy, '--api', `http://127.0.0.1:${HTTP_PORT}`]);
  expect(tk.exitCode, String(tk.stderr)).toBe(0);
  token = String(tk.stdout).trim();
  // A plain service on host a, on all of its addresses (the overlay one included).
  await mkdir(join(work.path, 'www'));
  await writeFile(join(work.path, 'www', 'index.html'), 'hello-from-host\n');
  children.push(execa('ip', ['netns', 'exec', A, 'busybox', 'httpd', '-f', '-p', '8081', '-h', join(work.path, 'www')], { reject: false, stdin: 'ignore' }));
}, 180_000);

afterAll(async () => {
  for (const c of children.reverse()) {
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 5000);
    await c.catch(() => undefined);
    clearTimeout(t);
  }
  for (const n of made.reverse()) await deleteNetns(n).catch(() => undefined);
  await work?.remove();
}, 60_000);

describe('lattice up', () => {
  it('a host and a sandbox reach each other by overlay name under their policies; status shows the handshake; down leaves nothing', async () => {
    const up = inNs(A, stateA(), ['up', '--name', 'hosta', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.21']);
    children.push(up);
    let upErr = '';
    up.stderr?.on('data', (d: Buffer) => (upErr += d.toString()));
    await waitFor(() => upErr.includes('is up on lattice0'), 60_000, 'lattice up');
    expect(String((await ip(['-j', 'route', 'show', 'dev', 'lattice0'], A)))).toContain('10.77.0.0/16');

    const sbx = inNs(B, join(work.path, 'state-b'), ['sandbox', 'start', '--name', 'sbx', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.22', '--rootfs', rootfs, '--', 'sh', '-c',
      `mkdir -p /tmp/w && echo hello-from-sandbox > /tmp/w/index.html && httpd -p 8080 -h /tmp/w && while true; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 hosta.${NS}.lattice 8081; sleep 0.3; done`]);
    children.push(sbx);
    let sbxOut = '';
    let sbxErr = '';
    sbx.stdout?.on('data', (d: Buffer) => (sbxOut += d.toString()));
    sbx.stderr?.on('data', (d: Buffer) => (sbxErr += d.toString()));
    // sandbox -> host, by the host's overlay name (the sandbox's resolver is the pump)
    await waitFor(() => sbxOut.includes('hello-from-host'), 90_000, `the sandbox reaching hosta (sandbox: ${sbxErr.slice(-500)} / up: ${upErr.slice(-500)})`);

    // host -> sandbox, by the sandbox's overlay name through the pump's resolver on the host TUN
    let addr = '';
    await waitFor(async () => {
      const r = await sh(A, `busybox nslookup sbx.${NS}.lattice 169.254.77.1`);
      addr = /Address:\s*(10\.77\.\d+\.\d+)/.exec(String(r.stdout))?.[1] ?? '';
      return addr !== '';
    }, 30_000, 'the overlay name of the sandbox resolving on the host');
    let page = '';
    await waitFor(async () => {
      page = String((await sh(A, `curl -s -m 3 http://${addr}:8080/`)).stdout);
      return page.includes('hello-from-sandbox');
    }, 30_000, 'hosta reaching the sandbox');
    // The host's own pump enforces the policy: a port no rule allows is refused at once.
    const denied = await sh(A, `curl -s -m 3 http://${addr}:9999/`);
    expect(denied.exitCode).not.toBe(0);

    // status: the sandbox as a peer, with a handshake and bytes both ways
    let s: HostStatus | undefined;
    await waitFor(async () => {
      const r = await inNs(A, stateA(), ['status', '--name', 'hosta', '--json']);
      s = r.exitCode === 0 ? (JSON.parse(String(r.stdout)) as HostStatus) : undefined;
      const p = s?.peers.find((x) => x.name === 'sbx');
      return Boolean(p?.latestHandshake && p.rxBytes > 0 && p.txBytes > 0);
    }, 30_000, `status with a handshake (last: ${JSON.stringify(s)})`);
    expect(s!.ifname).toBe('lattice0');
    expect(s!.routes).toContain('10.77.0.0/16');
    const table = await inNs(A, stateA(), ['status', '--name', 'hosta']);
    expect(String(table.stdout)).toMatch(/sbx\s+198\.18\.0\.22:\d+\s+\d+s ago/);
    expect(String(table.stdout)).toContain('direct');

    // down, from another process: up exits 0 and nothing it added is left
    const down = await inNs(A, stateA(), ['down', '--name', 'hosta']);
    expect(down.exitCode, String(down.stderr)).toBe(0);
    expect(String(down.stdout)).toContain('hosta is down');
    const upDone = await up;
    expect(upDone.exitCode, upErr.slice(-800)).toBe(0);
    expect(String(await ip(['-j', 'link', 'show'], A))).not.toContain('lattice0');
    expect(String(await ip(['-4', 'route', 'show'], A))).not.toContain('10.77.');
    expect(String((await execa('ip', ['netns', 'exec', A, 'nft', 'list', 'tables'])).stdout)).not.toContain('lattice');
    expect(await readdir(join(stateA(), 'host')).catch(() => [])).toEqual([]);
    // The identity stays for the next `up` (as for `sandbox start`).
    expect(JSON.parse(await readFile(join(stateA(), 'credentials', 'hosta.json'), 'utf8'))).toHaveProperty('address');
    const again = await inNs(A, stateA(), ['status', '--name', 'hosta']);
    expect(again.exitCode).not.toBe(0);
    expect(String(again.stderr)).toContain('not running');
    sbx.kill('SIGTERM');
    await sbx;
  }, 240_000);
  it('after a crashed `up`, a restarted one (same identity) and a plain wireguard-go host added with `peer add-static` reach each other', async () => {
    const cred = JSON.parse(await readFile(join(stateA(), 'credentials', 'hosta.json'), 'utf8')) as { publicKey: string; address: { ipv4: string } };
    // A crashed `up` (SIGKILL): its TUN goes with its fd, its record stays and the next `up` clears it.
    const crashed = inNs(A, stateA(), ['up', '--name', 'hosta', '--advertise', '198.18.0.21']);
    let crashedErr = '';
    crashed.stderr?.on('data', (d: Buffer) => (crashedErr += d.toString()));
    await waitFor(() => crashedErr.includes('is up on lattice0'), 60_000, 'lattice up (before the crash)');
    crashed.kill('SIGKILL');
    await crashed;
    expect(String(await ip(['-j', 'link', 'show'], A))).not.toContain('lattice0');
    expect((await inNs(A, stateA(), ['status', '--name', 'hosta'])).exitCode).not.toBe(0);
    // No --token: the stored identity.
    const up = inNs(A, stateA(), ['up', '--name', 'hosta', '--advertise', '198.18.0.21']);
    children.push(up);
    let upErr = '';
    up.stderr?.on('data', (d: Buffer) => (upErr += d.toString()));
    await waitFor(() => upErr.includes('is up on lattice0'), 60_000, 'lattice up (restart)');
    expect(upErr).toContain(`at ${cred.address.ipv4} `);
    const st = JSON.parse(String((await inNs(A, stateA(), ['status', '--name', 'hosta', '--json'])).stdout)) as HostStatus;

    const priv = String((await execa('wg', ['genkey'])).stdout).trim();
    const pub = String((await execa('wg', ['pubkey'], { input: priv })).stdout).trim();
    const add = await inNs(PUB, cpState, ['peer', 'add-static', 'wgc', '--namespace', NS, '--public-key', pub, '--endpoint', '198.18.0.23:51820', '--api', `http://127.0.0.1:${HTTP_PORT}`, '--json']);
    expect(add.exitCode, String(add.stderr)).toBe(0);
    const peer = JSON.parse(String(add.stdout)) as { ipv4: string };

    const wgGo = execa('ip', ['netns', 'exec', C, 'wireguard-go', '-f', WG_IF], { env: { WG_PROCESS_FOREGROUND: '1' }, reject: false, stdin: 'ignore' });
    children.push(wgGo);
    await waitFor(async () => (await execa('ip', ['-n', C, 'link', 'show', WG_IF], { reject: false })).exitCode === 0, 30_000, 'wireguard-go interface');
    const keyFile = join(work.path, 'wgc.key');
    await writeFile(keyFile, priv + '\n', { mode: 0o600 });
    await execa('ip', ['netns', 'exec', C, 'wg', 'set', WG_IF, 'private-key', keyFile, 'listen-port', '51820', 'peer', cred.publicKey, 'allowed-ips', '10.77.0.0/16', 'endpoint', `198.18.0.21:${st.listenPort}`]);
    await ip(['addr', 'add', `${peer.ipv4}/32`, 'dev', WG_IF], C);
    await ip(['link', 'set', WG_IF, 'up'], C);
    await ip(['route', 'add', '10.77.0.0/16', 'dev', WG_IF], C);
    await mkdir(join(work.path, 'wwwc'));
    await writeFile(join(work.path, 'wwwc', 'index.html'), 'hello-from-wireguard-go\n');
    children.push(execa('ip', ['netns', 'exec', C, 'busybox', 'httpd', '-f', '-p', '8080', '-h', join(work.path, 'wwwc')], { reject: false, stdin: 'ignore' }));

    // wireguard-go host -> lattice host, and back by the static peer's overlay name
    let page = '';
    await waitFor(async () => {
      page = String((await sh(C, `curl -s -m 3 http://${cred.address.ipv4}:8081/`)).stdout);
      return page.includes('hello-from-host');
    }, 60_000, `the static peer reaching hosta (up: ${upErr.slice(-500)})`);
    let addr = '';
    await waitFor(async () => {
      addr = /Address:\s*(10\.77\.\d+\.\d+)/.exec(String((await sh(A, `busybox nslookup wgc.${NS}.lattice 169.254.77.1`)).stdout))?.[1] ?? '';
      return addr !== '';
    }, 30_000, 'the static peer\'s overlay name on the host');
    expect(addr).toBe(peer.ipv4);
    await waitFor(async () => String((await sh(A, `curl -s -m 3 http://${addr}:8080/`)).stdout).includes('hello-from-wireguard-go'), 30_000, 'hosta reaching the static peer');

    const down = await inNs(A, stateA(), ['down', '--name', 'hosta']);
    expect(down.exitCode, String(down.stderr)).toBe(0);
    expect((await up).exitCode).toBe(0);
    expect(String(await ip(['-j', 'link', 'show'], A))).not.toContain('lattice0');
  }, 180_000);
});
