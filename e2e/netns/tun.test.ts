/**
 * LinuxTun against the kernel: a TUN moved into a test netns with 10.98.0.1/24, driven by packets we
 * write (the kernel answers echo requests out of the TUN) and by packets the kernel originates.
 */
import { execa } from 'execa';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addAddress, createNetns, deleteNetns, listLinks, setLinkUp, IpError } from '../../src/netns/ip.js';
import { openLinuxTun, TunError, type LinuxTun } from '../../src/tun/linux.js';
import { createTunInNetns } from '../../src/netns/sandbox-net.js';
import { icmpEcho, parseIp } from '../support/packets.js';
import { requirePath, requireRoot, waitFor } from '../support/env.js';

beforeAll(() => {
  requireRoot();
  requirePath('/dev/net/tun', 'load the tun module: modprobe tun');
});

const NS = `ltnet-tun-${process.pid}`;
const IF = `ltnett${process.pid % 100000}`;
const LOCAL = '10.98.0.1';
const REMOTE = '10.98.0.2';


describe('LinuxTun', () => {
  beforeAll(async () => {
    await deleteNetns(NS);
    await createNetns(NS);
  });
  afterAll(async () => {
    await deleteNetns(NS);
  });

  async function plumbed(name: string): Promise<LinuxTun> {
    const tun = await createTunInNetns(name, NS, { mtu: 1500 });
    await execa('ip', ['-n', NS, 'link', 'set', 'dev', tun.name, 'addrgenmode', 'none']);
    await addAddress(tun.name, `${LOCAL}/24`, NS);
    await setLinkUp(tun.name, {}, NS);
    return tun;
  }

  it('keeps its fd across the move into a netns: echo requests written get replies read, one packet per read', async () => {
    const tun = await plumbed(IF);
    try {
      expect(tun.name).toBe(IF);
      expect(tun.mtu).toBe(1500);
      expect((await listLinks(NS)).find((l) => l.ifname === IF)?.mtu).toBe(1500);
      const got: Uint8Array[] = [];
      tun.start((p) => got.push(p));
      const N = 50;
      for (let seq = 1; seq <= N; seq++) tun.write(icmpEcho(REMOTE, LOCAL, 8, 7, seq, new Uint8Array(1372).fill(seq)));
      await waitFor(() => got.length >= N, 60_000, `${N} packets`);
      expect(got.length).toBe(N);
      const replies = got.map((p) => ({ ip: parseIp(p)!, len: p.length }));
      for (const r of replies) {
        expect(r.len).toBe(1400); // exactly one packet per read
        expect(r.ip).toMatchObject({ version: 4, src: LOCAL, dst: REMOTE, proto: 1 });
        expect(r.ip.l4[0]).toBe(0); // echo reply
      }
      // Each reply carries the payload of its own request: no packet was torn or merged.
      for (const p of got) {
        const ip = parseIp(p)!;
        const seq = (ip.l4[6] << 8) | ip.l4[7];
        expect(ip.l4[8]).toBe(seq & 0xff);
      }
      expect(tun.stats).toMatchObject({ rxPackets: N, txPackets: N, txErrors: 0 });
      // The delivered packets are copies: the next read does not overwrite them.
      expect(new Set(got.map((p) => p.buffer)).size).toBe(N);
    } finally {
      await tun.close();
    }
  });

  it('counts (never throws) writes the kernel refuses, and ignores writes after close', async () => {
    const tun = await openLinuxTun(`${IF}w`); // never brought up: writes fail with EIO
    tun.write(icmpEcho(REMOTE, LOCAL, 8, 1, 1, new Uint8Array(8)));
    expect(tun.stats.txErrors).toBe(1);
    await tun.close();
    await tun.close(); // idempotent
    tun.write(new Uint8Array(20));
    expect(tun.stats.txErrors).toBe(1);
    expect((await listLinks()).map((l) => l.ifname)).not.toContain(`${IF}w`);
  });

  it('does not leak its descriptors into child processes (runsc must never inherit the TUN)', async () => {
    const tun = await openLinuxTun(`${IF}f`);
    try {
      tun.start(() => undefined);
      const { stdout: own } = await execa('sh', ['-c', `ls -l /proc/${process.pid}/fd`]);
      expect(own).toContain('/dev/net/tun'); // the check below can see a TUN fd when there is one
      const { stdout } = await execa('sh', ['-c', 'ls -l /proc/$$/fd']);
      expect(stdout).not.toContain('/dev/net/tun');
    } finally {
      await tun.close();
    }
  });

  it('close() stops an idle reader and removes the interface', async () => {
    const tun = await plumbed(`${IF}c`);
    tun.start(() => undefined);
    await tun.close(); // resolves only once the reader has stopped (bench/tun.ts reports a slow close)
    expect((await listLinks(NS)).map((l) => l.ifname)).not.toContain(`${IF}c`);
  });

  it('the reader ends by itself when the interface vanishes, and close() still resolves', async () => {
    const ns2 = `${NS}-x`;
    await createNetns(ns2);
    const tun = await createTunInNetns(`${IF}x`, ns2);
    tun.start(() => undefined);
    await deleteNetns(ns2); // takes the interface with it
    await waitFor(() => tun.stats.rxErrors > 0, 60_000, 'a read error once the interface is gone');
    await tun.close();
  });

  it('does not keep the process alive after close()', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ltnet-tun-'));
    try {
      const script = join(dir, 'child.mts'); // .mts: no package.json up there says ESM
      const mod = new URL('../../src/tun/linux.ts', import.meta.url).pathname;
      await writeFile(
        script,
        `import { openLinuxTun } from ${JSON.stringify(mod)};\n` +
          `const tun = await openLinuxTun('${IF}k');\n` +
          `tun.start(() => {});\n` +
          `setTimeout(() => { void tun.close().then(() => console.log('closed')); }, 100);\n`,
      );
      const res = await execa('node', ['--import', 'tsx', script], { cwd: process.cwd(), timeout: 60_000, reject: false }); // a hang, not a slow start, is the fault
      expect(res.timedOut).toBe(false);
      expect(res.stdout).toContain('closed');
      expect(res.exitCode).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reports bad names and existing non-TUN links as errors', async () => {
    await expect(openLinuxTun('has space')).rejects.toBeInstanceOf(TunError);
    await expect(openLinuxTun('x'.repeat(16))).rejects.toBeInstanceOf(TunError);
    await expect(openLinuxTun('lo')).rejects.toBeInstanceOf(TunError);
    await expect(createTunInNetns(`${IF}n`, 'ltnet-no-such-ns')).rejects.toBeInstanceOf(IpError);
    expect((await listLinks()).map((l) => l.ifname)).not.toContain(`${IF}n`);
  });
});
