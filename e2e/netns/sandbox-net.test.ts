/**
 * The sandbox network for real: a netns with only lo and a TUN whose fd this process holds, and a
 * runsc --network=sandbox container (busybox, OCI bundle written by hand) running in it. What the
 * container sends leaves through the TUN as raw IP; what we write into the TUN reaches its process.
 */
import { execa } from 'execa';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAddresses, listLinks, listNetns, listRoutes } from '../../src/netns/ip.js';
import { listSandboxNetworks, reapSandboxNetworks, setupSandboxNetwork, type SandboxNetwork } from '../../src/netns/sandbox-net.js';
import { COMPAT_WRAPPER, needsNetnsWorkaround, parseRunscVersion } from '../../src/runsc/compat.js';
import { icmpEcho, ipv4Bytes, parseIp, parseUdp, udpPacket, type ParsedPacket } from '../support/packets.js';
import { requireBinaries, requirePath, requireRoot } from '../support/env.js';

beforeAll(async () => {
  requireRoot();
  requirePath('/dev/net/tun', 'load the tun module: modprobe tun');
  requirePath('/bin/busybox', 'run: make setup (busybox-static)');
  await requireBinaries('runsc', 'ip');
});

const PREFIX = 'ltnet-';
const ID = `e2e${process.pid}`;
const SANDBOX_V4 = '10.77.0.2';
const SANDBOX_V6 = 'fd77::2';
const FAR_V4 = '192.0.2.10'; // TEST-NET-1: only ever exists on our TUN
const DNS_V4 = '192.0.2.53';
const FAR_V6 = 'fd77::99';
const ANSWER_V4 = '10.77.0.9';

/** A DNS response to `query` with one A record (enough for busybox nslookup). */
function dnsAnswer(query: Uint8Array, addr: string): Uint8Array {
  let end = 12;
  while (query[end] !== 0) end += query[end] + 1;
  end += 5; // root label + QTYPE + QCLASS
  const q = query.subarray(12, end);
  const out = new Uint8Array(12 + q.length + 16);
  const v = new DataView(out.buffer);
  out.set(query.subarray(0, 2), 0); // ID
  v.setUint16(2, 0x8180); // response, RD, RA, NOERROR
  v.setUint16(4, 1);
  v.setUint16(6, 1);
  out.set(q, 12);
  const a = 12 + q.length;
  v.setUint16(a, 0xc00c); // name: pointer to the question
  v.setUint16(a + 2, 1); // A
  v.setUint16(a + 4, 1); // IN
  v.setUint32(a + 6, 60);
  v.setUint16(a + 10, 4);
  out.set(ipv4Bytes(addr), a + 12);
  return out;
}

async function writeBundle(dir: string, script: string, netnsPath: string): Promise<void> {
  const rootfs = join(dir, 'rootfs');
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  for (const d of ['proc', 'sys', 'dev', 'tmp', 'etc']) await mkdir(join(rootfs, d), { recursive: true });
  await copyFile('/bin/busybox', join(rootfs, 'bin/busybox'));
  for (const app of ['sh', 'ping', 'nc', 'wget', 'nslookup', 'echo', 'cat', 'sleep']) await symlink('busybox', join(rootfs, 'bin', app));
  await execa('runsc', ['spec'], { cwd: dir });
  const spec = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as {
    process: { args: string[]; terminal: boolean; capabilities: Record<string, string[]> };
    root: { path: string; readonly: boolean };
    linux: { namespaces: Array<{ type: string; path?: string }> };
  };
  spec.process.args = ['/bin/sh', '-c', script];
  spec.process.terminal = false;
  // ping opens a raw ICMP socket: CAP_NET_RAW here and --net-raw on runsc.
  for (const set of Object.values(spec.process.capabilities)) set.push('CAP_NET_RAW');
  spec.root = { path: 'rootfs', readonly: true };
  spec.linux.namespaces = spec.linux.namespaces.filter((n) => n.type !== 'network');
  spec.linux.namespaces.push({ type: 'network', path: netnsPath });
  await writeFile(join(dir, 'config.json'), JSON.stringify(spec, null, 2));
}

describe('sandbox network (netns + TUN + runsc --network=sandbox)', () => {
  let net: SandboxNetwork | undefined;
  let tmp = '';
  const packets: ParsedPacket[] = [];
  const answered = { echo: 0, dns: 0 };

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'ltnet-e2e-'));
    net = await setupSandboxNetwork({
      id: ID,
      prefix: PREFIX,
      overlayAddrs: [`${SANDBOX_V4}/32`, `${SANDBOX_V6}/128`],
      gateway: '10.77.0.1',
      gateway6: 'fd77::1',
      mtu: 1420,
    });
    const tun = net.tun;
    // The far side of the wire: answer pings to FAR_V4 and A queries to DNS_V4.
    tun.start((raw) => {
      const p = parseIp(raw);
      if (!p) return;
      packets.push(p);
      if (p.version === 4 && p.proto === 1 && p.dst === FAR_V4 && p.l4[0] === 8) {
        const v = new DataView(p.l4.buffer, p.l4.byteOffset, p.l4.byteLength);
        tun.write(icmpEcho(FAR_V4, p.src, 0, v.getUint16(4), v.getUint16(6), p.l4.subarray(8)));
        answered.echo++;
      }
      if (p.version === 4 && p.proto === 17 && p.dst === DNS_V4) {
        const u = parseUdp(p.l4);
        if (u?.dport === 53) {
          tun.write(udpPacket(DNS_V4, p.src, 53, u.sport, dnsAnswer(u.payload, ANSWER_V4)));
          answered.dns++;
        }
      }
    });
  });

  afterAll(async () => {
    await execa('runsc', ['--root', join(tmp, 'state'), 'delete', '-force', ID], { reject: false });
    await net?.teardown();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('holds only lo and the TUN, with the overlay addresses and onlink default routes', async () => {
    const n = net!;
    expect(n.netnsPath).toBe(`/var/run/netns/${PREFIX}${ID}`);
    const links = await listLinks(n.netnsName);
    expect(links.map((l) => l.ifname).sort()).toEqual(['lo', n.tun.name].sort());
    const tunLink = links.find((l) => l.ifname === n.tun.name)!;
    expect(tunLink.mtu).toBe(1420);
    expect(tunLink.flags).toContain('UP');
    expect(links.find((l) => l.ifname === 'lo')!.flags).toContain('UP');
    const addrs = (await listAddresses(n.netnsName)).filter((a) => a.ifname === n.tun.name);
    expect(addrs.map((a) => `${a.local}/${a.prefixlen}`).sort()).toEqual([`${SANDBOX_V4}/32`, `${SANDBOX_V6}/128`]);
    const r4 = await listRoutes(4, n.netnsName);
    expect(r4).toContainEqual(expect.objectContaining({ dst: 'default', gateway: '10.77.0.1', dev: n.tun.name, flags: expect.arrayContaining(['onlink']) }));
    const r6 = await listRoutes(6, n.netnsName);
    expect(r6).toContainEqual(expect.objectContaining({ dst: 'default', gateway: 'fd77::1', dev: n.tun.name }));
    expect(await listSandboxNetworks(PREFIX)).toContainEqual({ id: ID, netnsName: n.netnsName });
  });

  it('carries the container traffic through the launcher-held TUN fd, both ways', async () => {
    const n = net!;
    const bundle = join(tmp, 'bundle');
    await mkdir(bundle);
    const script = [
      `ping -c 1 -W 5 ${FAR_V4} && echo PING_OK`,
      `nslookup -type=a peer.default.lattice ${DNS_V4} && echo DNS_OK`,
      `nc -w 1 ${FAR_V6} 7777 </dev/null; echo NC6_DONE`,
    ].join('; ');
    await writeBundle(bundle, script, n.netnsPath);
    const version = parseRunscVersion((await execa('runsc', ['--version'])).stdout);
    const runsc = needsNetnsWorkaround(version) ? COMPAT_WRAPPER : 'runsc';
    const res = await execa(runsc, ['--network=sandbox', '--net-raw', '--root', join(tmp, 'state'), 'run', '--bundle', bundle, ID], {
      reject: false,
      stdin: 'ignore',
      timeout: 60_000,
    });
    const out = `${res.stdout}\n${res.stderr}`;
    if (process.env.LTNET_DEBUG) console.log(res.exitCode, out, packets.map((p) => `${p.src}>${p.dst}/${p.proto}`));
    expect(out).not.toContain('cannot run with network enabled');

    // Sandbox -> TUN: raw IP with the sandbox's own source addresses.
    const echoReq = packets.find((p) => p.proto === 1 && p.dst === FAR_V4);
    expect(echoReq?.src).toBe(SANDBOX_V4);
    const dnsQuery = packets.find((p) => p.proto === 17 && p.dst === DNS_V4);
    expect(dnsQuery?.src).toBe(SANDBOX_V4);
    const syn6 = packets.find((p) => p.version === 6 && p.proto === 6 && p.dst === FAR_V6);
    expect(syn6?.src).toBe(SANDBOX_V6);
    expect(packets.every((p) => p.src === SANDBOX_V4 || p.src === SANDBOX_V6)).toBe(true);

    // TUN -> sandbox: the echo reply and the DNS answer we wrote reached the processes.
    expect(answered.echo).toBeGreaterThan(0);
    expect(res.stdout).toContain('PING_OK');
    expect(res.stdout).toContain(ANSWER_V4);
    expect(res.stdout).toContain('DNS_OK');
    expect(res.stdout).toContain('NC6_DONE');
  });

  it('tears down idempotently and leaves no netns behind', async () => {
    const n = net!;
    const name = n.netnsName;
    await n.teardown();
    await n.teardown();
    expect(await listNetns()).not.toContain(name);
    const links = await listLinks();
    expect(links.map((l) => l.ifname)).not.toContain(n.tun.name);
  });
});

describe('reapSandboxNetworks', () => {
  it('removes the netns of dead sandboxes only', async () => {
    const alive = await setupSandboxNetwork({ id: `${ID}a`, prefix: `${PREFIX}r-`, overlayAddrs: ['10.78.0.2/32'], gateway: '10.78.0.1' });
    const dead = await setupSandboxNetwork({ id: `${ID}d`, prefix: `${PREFIX}r-`, overlayAddrs: ['10.78.0.3/32'], gateway: '10.78.0.1' });
    try {
      await dead.tun.close(); // its launcher died: the fd is gone, the netns is left
      const removed = await reapSandboxNetworks((id) => id === alive.id, `${PREFIX}r-`);
      expect(removed).toEqual([dead.netnsName]);
      const names = await listNetns();
      expect(names).toContain(alive.netnsName);
      expect(names).not.toContain(dead.netnsName);
    } finally {
      await alive.teardown();
      await dead.teardown();
    }
  });
});
