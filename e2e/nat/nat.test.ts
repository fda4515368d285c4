/**
 * Peers behind NAT, end to end: two sites in network namespaces behind nftables NAT routers, coturn,
 * nats-server and the TCP relay on a public segment (see topology.ts). Each site runs a lattice WireGuard
 * device whose UDP socket also speaks STUN, with createPeerConnectivity racing direct and relay paths.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireLabComponents, startLab, until, type Lab, type LabOptions, type SiteProcess, type SiteStatus } from './harness.js';
import { exec, renumberWan } from './topology.js';

const PREFIX = `ltnat${process.pid % 100000}`;

let lab: Lab | undefined;
let tmp: string | undefined;

beforeAll(async () => {
  await requireLabComponents();
});

afterEach(async () => {
  await lab?.close();
  lab = undefined;
  if (tmp) await rm(tmp, { recursive: true, force: true });
  tmp = undefined;
});

async function newLab(nat: LabOptions['nat'], opts: Partial<LabOptions> = {}): Promise<Lab> {
  tmp = await mkdtemp(join(tmpdir(), 'ltnat-'));
  lab = await startLab({ prefix: PREFIX, tmp, nat, ...opts });
  return lab;
}

const peerPath = (s: SiteStatus) => s.paths[0];

async function pathOf(site: SiteProcess, kind: string, ms = 60_000): Promise<SiteStatus> {
  let last: SiteStatus | undefined;
  try {
    return await until(`path ${kind}`, async () => {
      const s = (last = await site.status());
      return peerPath(s)?.kind === kind && peerPath(s)?.rttMs !== null ? s : undefined;
    }, ms);
  } catch (err) {
    throw new Error(`${String(err)}; last status: ${JSON.stringify({ path: last?.paths, candidates: last?.candidates, device: last?.device })}`);
  }
}

/** Send `count` packets each way and wait until all arrive. */
async function exchange(l: Lab, tag: string, count = 20): Promise<void> {
  // The first packets may wait for a handshake; send one first, then the batch.
  await l.a.request({ cmd: 'send', count: 1, tag: `${tag}-warm` });
  await until('handshake', async () => (await l.b.status()).rx[`${tag}-warm`]?.count === 1);
  await l.a.request({ cmd: 'send', count, tag });
  await l.b.request({ cmd: 'send', count, tag });
  await until(`${count} packets each way`, async () => {
    const [sa, sb] = await Promise.all([l.a.status(), l.b.status()]);
    return sa.rx[tag]?.count === count && sb.rx[tag]?.count === count;
  });
}

describe('peers behind NAT', () => {
  it('both sites behind cone NATs: a direct path through the NATs wins the race, traffic flows', async () => {
    // Every path races: direct UDP, ICE, TURN (coturn) and the TCP relay.
    const l = await newLab({ a: 'cone', b: 'cone' }, { ice: true, turn: true });
    await until('all four paths answering', async () => {
      const pairs = peerPath(await l.a.status())?.pairs as { via: string; alive: boolean }[] | undefined;
      return ['udp', 'ice', 'turn', 'tcp'].every((v) => pairs?.some((p) => p.via === v && p.alive));
    });
    const [sa, sb] = await Promise.all([pathOf(l.a, 'direct'), pathOf(l.b, 'direct')]);
    // Server-reflexive candidates found with STUN from the WireGuard socket: the router's WAN address.
    expect(sa.candidates).toContainEqual({ type: 'srflx', address: '198.18.0.11', port: 51820 });
    expect(sb.candidates).toContainEqual({ type: 'srflx', address: '198.18.0.12', port: 51820 });
    // The direct path goes to the peer's public mapping, not to its private address.
    expect(peerPath(sa).endpoint).toBe('198.18.0.12:51820');
    expect(peerPath(sb).endpoint).toBe('198.18.0.11:51820');
    await exchange(l, 'cone');
    const after = await l.a.status();
    expect(after.device.endpoint).toBe('198.18.0.12:51820');
    expect(peerPath(after).establishMs).toBeGreaterThanOrEqual(0);
  });

  it('both sites behind symmetric NATs: hole punching fails, the relay path carries the traffic', async () => {
    const l = await newLab({ a: 'symmetric', b: 'symmetric' });
    await Promise.all([pathOf(l.a, 'relay'), pathOf(l.b, 'relay')]);
    await exchange(l, 'sym');
    // Hole punching has had its chance once every direct pair on both sides has sent its first burst of checks.
    type Pair = { kind: string; sent: number; answered: number };
    const directPairs = (st: SiteStatus) => (peerPath(st).pairs as Pair[]).filter((p) => p.kind === 'direct');
    await until('every direct pair to send 5 checks', async () => {
      const both = [...directPairs(await l.a.status()), ...directPairs(await l.b.status())];
      return both.length > 0 && both.every((p) => p.sent >= 5);
    });
    const [sa, sb] = await Promise.all([l.a.status(), l.b.status()]);
    expect(peerPath(sa).kind).toBe('relay');
    expect(peerPath(sb).kind).toBe('relay');
    // The device's own endpoint is the virtual one (endpointKey() brackets it: "[relay:site-b]:0").
    expect(sa.device.endpoint).toContain('relay:site-b');
    // Symmetric mapping: the srflx port seen by the STUN server is not a usable port for the peer.
    const directAnswered = (peerPath(sa).pairs as { kind: string; answered: number }[]).filter((p) => p.kind === 'direct' && p.answered > 0);
    expect(directAnswered).toEqual([]);
  });

  it('both sites behind symmetric NATs with TURN and no TCP relay: the TURN relay (coturn) carries the traffic', async () => {
    const l = await newLab({ a: 'symmetric', b: 'symmetric' }, { relay: false, turn: true });
    const [sa] = await Promise.all([pathOf(l.a, 'relay'), pathOf(l.b, 'relay')]);
    expect(peerPath(sa).via).toBe('turn');
    expect(peerPath(sa).endpoint).toBe('turn:site-b');
    await exchange(l, 'turn');
    const after = await l.a.status();
    expect(after.turn!.sent).toBeGreaterThan(0);
    expect(after.turn!.received).toBeGreaterThan(0);
  });

  it('direct UDP disabled: an ICE data channel (node-datachannel) carries the traffic', async () => {
    const l = await newLab({ a: 'cone', b: 'cone' }, { relay: false, ice: true, direct: false });
    const [sa] = await Promise.all([pathOf(l.a, 'ice'), pathOf(l.b, 'ice')]);
    expect(peerPath(sa).via).toBe('ice');
    expect(peerPath(sa).endpoint).toBe('ice:site-b');
    await exchange(l, 'ice');
    expect((await l.b.status()).ice!.received).toBeGreaterThan(0);
  });

  it('a NAT mapping changes mid-transfer: the tunnel recovers by itself', async () => {
    const l = await newLab({ a: 'cone', b: 'cone' });
    await Promise.all([pathOf(l.a, 'direct'), pathOf(l.b, 'direct')]);
    await exchange(l, 'pre');
    await l.a.request({ cmd: 'pump', ms: 20, tag: 'ab' });
    await l.b.request({ cmd: 'pump', ms: 20, tag: 'ba' });
    await until('traffic both ways', async () => {
      const [sa, sb] = await Promise.all([l.a.status(), l.b.status()]);
      return (sb.rx.ab?.count ?? 0) > 10 && (sa.rx.ba?.count ?? 0) > 10;
    });
    // Site A's router gets a new WAN address: every NAT mapping of site A is gone.
    await renumberWan(l.topo.sites.a, '198.18.0.21');
    const t0 = Date.now();
    const [a0, b0] = await Promise.all([l.a.status(), l.b.status()]);
    const recovered = await until(
      'traffic both ways after the NAT change',
      async () => {
        const [sa, sb] = await Promise.all([l.a.status(), l.b.status()]);
        return sb.rx.ab.count > b0.rx.ab.count + 20 && sa.rx.ba.count > a0.rx.ba.count + 20 ? { sa, sb } : undefined;
      },
      30_000,
    );
    const recoveryMs = Date.now() - t0;
    console.log(`NAT renumbering: traffic flows again after ${recoveryMs} ms`);
    // Direct again, through the new mapping (may pass through the relay meanwhile).
    const sb = await pathOf(l.b, 'direct');
    expect(peerPath(sb).endpoint).toBe('198.18.0.21:51820');
    expect(recovered.sa.candidates).toContainEqual({ type: 'srflx', address: '198.18.0.21', port: 51820 });
  });

  it('STUN and WireGuard share one port; garbage on that port is dropped without harm', async () => {
    const l = await newLab({ a: 'cone', b: 'cone' });
    await Promise.all([pathOf(l.a, 'direct'), pathOf(l.b, 'direct')]);
    await exchange(l, 'before');
    const before = await l.b.status();
    // The port the STUN server saw is the WireGuard socket's port, and the peer's WireGuard endpoint.
    expect(before.port).toBe(51820);
    expect(before.mux.stun).toBeGreaterThan(0);
    expect(before.mux.wireguard).toBeGreaterThan(0);
    // Garbage from inside site B's LAN (its router) to the shared port: random bytes, WireGuard-looking
    // headers with bad contents, STUN-looking messages with bad lengths and fingerprints.
    const script = `
      const dgram = require('node:dgram'); const { randomBytes } = require('node:crypto');
      const s = dgram.createSocket('udp4'); let n = 0; const N = 600;
      const pkts = [];
      for (let i = 0; i < 200; i++) { const b = randomBytes(1 + (i % 200)); b[0] |= 0x80; pkts.push(b); }
      for (let i = 0; i < 200; i++) { const b = randomBytes([148, 92, 64, 32, 200][i % 5]); b[0] = 1 + (i % 4); b[1] = b[2] = b[3] = 0; pkts.push(b); }
      for (let i = 0; i < 200; i++) { const b = randomBytes(20 + 4 * (i % 10)); b[0] = 0; b[1] = 1; b[2] = 0; b[3] = (i % 7) * 4; b.writeUInt32BE(0x2112a442, 4); pkts.push(b); }
      for (const p of pkts) s.send(p, 51820, '10.77.2.2', () => { if (++n === N) s.close(); });
    `;
    await exec(l.topo.sites.b.routerNs!, process.execPath, ['-e', script]);
    // Each third of the 600 datagrams lands on its own counter: wait until all three have moved that far.
    const after = await until('the 600 datagrams to be counted', async () => {
      const st = await l.b.status();
      const moved = (k: 'garbage' | 'stun') => st.mux[k] - before.mux[k];
      return moved('garbage') >= 200 && moved('stun') >= 200 && st.device.dropped - before.device.dropped >= 200 && st;
    });
    expect(after.mux.garbage - before.mux.garbage).toBe(200);
    // WireGuard-shaped garbage reached the device and was dropped by it, counted; STUN-shaped garbage
    // was dropped by the STUN decoder or the connectivity checks.
    expect(after.device.dropped - before.device.dropped).toBeGreaterThanOrEqual(200);
    expect(after.mux.stun - before.mux.stun).toBeGreaterThanOrEqual(200);
    // The tunnel is unharmed.
    await exchange(l, 'after');
    expect(peerPath(await l.b.status()).kind).toBe('direct');
  });
});
