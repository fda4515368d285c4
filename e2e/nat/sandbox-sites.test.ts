/**
 * `lattice sandbox start --stun` with each launcher inside its own NAT'd site (the topology of
 * e2e/nat/topology.ts, both sites behind cone NATs): the control plane, its nats-server and coturn sit on
 * the public segment. The launchers enter the site's network namespace with `nsenter --net` (not
 * `ip netns exec`, which remounts /sys and breaks runsc). Traffic flows between the two sandboxes and
 * `sandbox status` shows a direct path through the NATs; behind two symmetric NATs, the TCP relay.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, CLI } from '../support/env.js';
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from '../support/control-plane.js';
import { waitFor } from '../support/wgpeer.js';
import { applyNat, buildTopology, reapNetns, type Topology } from './topology.js';
import type { SandboxStatus } from '../../src/sandbox/nat-status.js';

const PREFIX = 'ltnw';
let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let topo: Topology | undefined;
const children: ResultPromise[] = [];
let cpState: string;
let cp: EmbeddedControlPlane | undefined;
const NATS_PORT = 4222;
const HTTP_PORT = 8470;
const STUN_PORT = 3478;
const RELAY_PORT = 4443;
/** The relay's secret file (made with `lattice relay secret`); each sandbox gets its own name's credential. */
let relaySecretFile: string;
let token: string;

const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [{ id: 'http', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' }],
  ingress: [{ id: 'http-in', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' }],
};

/** The CLI with the network namespace `ns` (and the host's mounts, so runsc works). */
function inNs(ns: string, stateDir: string, args: string[]) {
  return execa('nsenter', [`--net=/var/run/netns/${ns}`, process.execPath, CLI, '--state-dir', stateDir, ...args], { reject: false, stdin: 'ignore' });
}

const stateOf = (name: string) => join(work.path, `state-${name}`);

async function status(ns: string, name: string): Promise<SandboxStatus | undefined> {
  const r = await inNs(ns, stateOf(name), ['sandbox', 'status', name, '--json']);
  return r.exitCode === 0 ? (JSON.parse(String(r.stdout)) as SandboxStatus) : undefined;
}

beforeAll(async () => {
  for (const bin of ['runsc', 'nats-server', 'turnserver', 'nft', 'nsenter']) await requireBinary(bin);
  await reapNetns(PREFIX);
  work = await tempDir('ltnw-sites');
  rootfs = await busyboxRootfs(work.path);
  topo = await buildTopology(PREFIX, { a: 'cone', b: 'cone' });
  const pub = topo.pubAddress;

  const conf = join(work.path, 'turnserver.conf');
  await writeFile(conf, [`listening-ip=${pub}`, `listening-port=${STUN_PORT}`, 'stun-only', 'no-tls', 'no-dtls', 'no-cli', `pidfile=${join(work.path, 'turn.pid')}`, `userdb=${join(work.path, 'turndb')}`, `log-file=${join(work.path, 'turn.log')}`, 'simple-log', ''].join('\n'));
  children.push(execa('nsenter', [`--net=/var/run/netns/${topo.pubNs}`, 'turnserver', '-c', conf], { reject: false, stdin: 'ignore' }));

  // The embedded nats-server listens on loopback only: the public segment gets its own.
  const jsDir = join(work.path, 'js');
  await mkdir(jsDir);
  const nats = execa('nsenter', [`--net=/var/run/netns/${topo.pubNs}`, 'nats-server', '-a', pub, '-p', String(NATS_PORT), '-js', '-sd', jsDir], { reject: false, stdin: 'ignore' });
  children.push(nats);
  cpState = join(work.path, 'cp');
  await waitFor(async () => (await execa('nsenter', [`--net=/var/run/netns/${topo!.pubNs}`, 'bash', '-c', `exec 3<>/dev/tcp/${pub}/${NATS_PORT}`], { reject: false })).exitCode === 0, 60_000, 'nats-server');
  // The admin API stays on the public segment's loopback (beyond loopback it would be HTTPS): the
  // token is created from inside that netns.
  cp = await startEmbeddedControlPlane(cpState, { nats: `nats://${pub}:${NATS_PORT}`, httpPort: HTTP_PORT, netns: topo.pubNs });

  relaySecretFile = join(work.path, 'relay-secret');
  const sec = await inNs(topo.pubNs, cpState, ['relay', 'secret']);
  expect(sec.exitCode, String(sec.stderr)).toBe(0);
  await writeFile(relaySecretFile, String(sec.stdout), { mode: 0o600 });
  const relay = inNs(topo.pubNs, cpState, ['relay', 'serve', '--listen', `${pub}:${RELAY_PORT}`, '--secret-file', relaySecretFile]);
  children.push(relay);
  let rout = '';
  relay.stdout?.on('data', (d: Buffer) => (rout += d.toString()));
  await waitFor(async () => rout.includes('relay listening'), 60_000, 'relay server');

  const policy = join(work.path, 'policy.json');
  await writeFile(policy, JSON.stringify(POLICY));
  const tk = await inNs(topo.pubNs, cpState, ['token', 'create', '--namespace', 'ltnw', '--limit', '4', '--policy', policy, '--api', `http://127.0.0.1:${HTTP_PORT}`]);
  expect(tk.exitCode, String(tk.stderr)).toBe(0);
  token = String(tk.stdout).trim();
}, 120_000);

afterAll(async () => {
  await cp?.stop();
  for (const c of children.reverse()) {
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 5000);
    await c.catch(() => undefined);
    clearTimeout(t);
  }
  await topo?.destroy();
  await work?.remove();
}, 60_000);

/** A web sandbox in site a and a client in site b fetching from it over the overlay until stopped. */
async function pair(webName: string, clientName: string, extra: (name: string) => Promise<string[]> = async () => []) {
  const { a, b } = topo!.sites;
  const pub = topo!.pubAddress;
  const common = async (name: string) => ['--control-plane', `nats://${pub}:${NATS_PORT}`, '--token', token, '--stun', `stun:${pub}:${STUN_PORT}`, ...(await extra(name)), '--rootfs', rootfs];
  const web = inNs(a.hostNs, stateOf(webName), ['sandbox', 'start', '--name', webName, '--advertise', a.lanAddress, ...(await common(webName)), '--', 'sh', '-c', 'mkdir -p /tmp/w && echo hello-sites > /tmp/w/index.html && httpd -f -p 8080 -h /tmp/w']);
  children.push(web);
  let webErr = '';
  web.stderr?.on('data', (d: Buffer) => (webErr += d.toString()));
  await waitFor(async () => webErr.includes('enrolled'), 60_000, 'site a enrolled');
  const webAddr = (JSON.parse(await readFile(join(stateOf(webName), 'credentials', `${webName}.json`), 'utf8')) as { address: { ipv4: string } }).address.ipv4;

  const client = inNs(b.hostNs, stateOf(clientName), ['sandbox', 'start', '--name', clientName, '--advertise', b.lanAddress, ...(await common(clientName)), '--', 'sh', '-c',
    `while true; do if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 1 ${webAddr} 8080 | grep -q hello-sites; then echo ok; else echo fail; fi; sleep 0.2; done`]);
  children.push(client);
  let out = '';
  let cerr = '';
  client.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  client.stderr?.on('data', (d: Buffer) => (cerr += d.toString()));
  await waitFor(async () => (out.match(/ok/g) ?? []).length >= 3, 60_000, `traffic through the NATs (client: ${cerr.slice(-600)} / web: ${webErr.slice(-600)})`);
  return {
    stop: async () => {
      for (const c of [client, web]) c.kill('SIGTERM');
      await Promise.allSettled([client, web]);
    },
  };
}

async function pathTo(ns: string, self: string, peerName: string, kind: string): Promise<SandboxStatus> {
  let s: SandboxStatus | undefined;
  await waitFor(async () => {
    s = await status(ns, self);
    const p = s?.peers.find((x) => x.name === peerName);
    return p?.path?.kind === kind && p.path.rttMs !== null && p.latestHandshake !== null;
  }, 60_000, `${kind} path (last: ${JSON.stringify(s)})`);
  return s!;
}

describe('sandbox start behind NATs', () => {
  it('two cone NATs: a direct path through both; traffic flows; sandbox status shows it', async () => {
    const { a, b } = topo!.sites;
    const p = await pair('ltnw-a', 'ltnw-b');
    const s = await pathTo(b.hostNs, 'ltnw-b', 'ltnw-a', 'direct');
    const peer = s.peers.find((x) => x.name === 'ltnw-a')!;
    // Site a's LAN address is unreachable from site b: the path goes through a's NAT (its WAN address).
    expect(peer.endpoint).toContain(a.wanAddress);
    expect(s!.candidates?.some((c) => c.type === 'srflx' && c.address === b.wanAddress)).toBe(true);
    console.log(`ltnw sites: cone/cone direct path rtt=${peer.path!.rttMs} ms established in ${peer.path!.establishMs} ms`);
    await p.stop();
    expect(await status(b.hostNs, 'ltnw-b')).toBeUndefined();
  }, 150_000);

  it('two symmetric NATs: hole punching fails and the TCP relay (--relay) carries the traffic', async () => {
    const { a, b } = topo!.sites;
    for (const site of [a, b]) {
      site.nat = 'symmetric';
      await applyNat(site, true);
    }
    // Each sandbox holds only the relay credential for its own name (`lattice relay credential NAME`).
    const relayFlags = async (name: string) => {
      const c = await inNs(topo!.pubNs, cpState, ['relay', 'credential', name, '--secret-file', relaySecretFile]);
      expect(c.exitCode, String(c.stderr)).toBe(0);
      return ['--relay', `tcp://${topo!.pubAddress}:${RELAY_PORT}`, '--relay-token', String(c.stdout).trim()];
    };
    const p = await pair('ltnw-c', 'ltnw-d', relayFlags);
    const s = await pathTo(b.hostNs, 'ltnw-d', 'ltnw-c', 'relay');
    const peer = s.peers.find((x) => x.name === 'ltnw-c')!;
    expect(peer.path!.via).toBe('tcp');
    expect(peer.endpoint).toContain('relay:ltnw-c');
    await pathTo(a.hostNs, 'ltnw-c', 'ltnw-d', 'relay');
    console.log(`ltnw sites: symmetric/symmetric relay path rtt=${peer.path!.rttMs} ms established in ${peer.path!.establishMs} ms`);
    await p.stop();
  }, 150_000);
});
