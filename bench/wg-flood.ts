/**
 * Handshake-initiation flood against the TypeScript WireGuard device (issue 13, item 9): figures,
 * not pass/fail. Real UDP sockets on loopback, one process; in the same run:
 *   - baseline: an established session sends 3000 packets (10 every 10 ms) while nothing else
 *     happens; a brand-new peer's first handshake is timed;
 *   - flood: the same while a worker thread sends handshake initiations with a valid MAC1 (built
 *     from the device's public key, as anyone with the directory can) as fast as it can, from
 *     another source address;
 *   - flood x1024: the same from 1024 source addresses (what a spoofed many-source flood looks
 *     like to the device: the per-source limit admits each source's burst, cookies do the rest).
 * Prints session delivery % and time to a new handshake for both, and the ratios.
 * Run: npx tsx bench/wg-flood.ts
 *
 * Measured here (2 shared cores, loaded), one run each:
 *   before issue 13 (commit 2a45c89): no flood 100.0% / 31 ms; flood (~23 000 init/s) 21.7% / none in 20 s
 *   after:                            no flood 100.0% / 20 ms; flood (~14 000 init/s) 100.0% / 281 ms
 *   (other runs after: 93-98% delivery, 120-759 ms to a new handshake)
 *   with flood x1024 (one run, bounded per-source table): no flood 100.0% / 66 ms; flood (~8 200/s)
 *   90.0% / 702 ms; flood x1024 (~9 900/s) 24.9% / 1067 ms: many sources are not throttled.
 *   with the global handshake budget (HandshakeGuard, one run, loaded): no flood 100.0% / 4 ms;
 *   flood (~5 200/s) 100.0% / 102 ms (delivery ratio 1.00); flood x1024 (~6 700/s) 99.7% / 100 ms
 *   (delivery ratio 1.00; 3 972 cookie replies, 190 889 refused a reply by the budget).
 *   The no-flood handshake time swings 4-241 ms between runs on this machine, so the time ratio
 *   (here ~23x) says less than the absolute figure.
 */
import { Worker } from 'node:worker_threads';
import { systemClock } from '../src/clock.js';
import { UdpBind } from '../src/conn/udp.js';
import { Device } from '../src/wg/device.js';
import { IntervalTicker } from '../src/conn/ticker.js';
import { SodiumCrypto } from '../src/wg/crypto.js';
import { CookieGenerator } from '../src/wg/cookie.js';
import { marshalInitiation } from '../src/wg/messages.js';

const c = new SodiumCrypto();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function ipv4Packet(src: number[], dst: number[], len = 200): Uint8Array {
  const p = new Uint8Array(len);
  p[0] = 0x45;
  p[2] = len >> 8;
  p[3] = len & 0xff;
  p[8] = 64;
  p[9] = 17;
  p.set(src, 12);
  p.set(dst, 16);
  return p;
}

async function device(host: string, tickMs: number) {
  const priv = c.generatePrivateKey();
  const bind = await UdpBind.open({ host4: host, host6: '::1' });
  const dev = new Device({ privateKey: priv, bind, clock: systemClock, crypto: c, ticker: new IntervalTicker(tickMs) });
  return { dev, pub: c.publicKey(priv), ep: { address: host, port: bind.port } };
}

async function main(): Promise<void> {
  const b = await device('127.0.0.1', 100); // the launcher's device under attack
  const a = await device('127.0.0.1', 100); // an established peer
  let fromA = 0;
  b.dev.attach((pkt) => {
    if (pkt[15] === 2) fromA++;
  });
  a.dev.addPeer({ publicKey: b.pub, allowedIPs: ['10.0.0.1/32'], endpoint: b.ep });
  b.dev.addPeer({ publicKey: a.pub, allowedIPs: ['10.0.0.2/32'] });
  a.dev.up();
  b.dev.up();
  const toB = ipv4Packet([10, 0, 0, 2], [10, 0, 0, 1]);
  a.dev.sendPacket(toB);
  while (fromA === 0) await sleep(5);

  let nextNewPeer = 3;
  const newHandshake = async (): Promise<number> => {
    const n = nextNewPeer++;
    const fresh = await device('127.0.0.3', 50);
    b.dev.addPeer({ publicKey: fresh.pub, allowedIPs: [`10.0.0.${n}/32`] });
    fresh.dev.addPeer({ publicKey: b.pub, allowedIPs: ['10.0.0.1/32'], endpoint: b.ep });
    fresh.dev.up();
    const t0 = performance.now();
    fresh.dev.sendPacket(ipv4Packet([10, 0, 0, n], [10, 0, 0, 1]));
    while (fresh.dev.stats.handshakesCompleted === 0 && performance.now() - t0 < 20_000) await sleep(2);
    const ms = fresh.dev.stats.handshakesCompleted > 0 ? performance.now() - t0 : Infinity;
    await fresh.dev.close();
    return ms;
  };

  const session = async (): Promise<number> => {
    const before = fromA;
    let sent = 0;
    for (let i = 0; i < 300; i++) {
      for (let j = 0; j < 10; j++) {
        a.dev.sendPacket(toB);
        sent++;
      }
      await sleep(10);
    }
    await sleep(200);
    return (100 * (fromA - before)) / sent;
  };

  const measure = async (label: string) => {
    const [delivery, hsMs] = await Promise.all([session(), sleep(500).then(newHandshake)]);
    console.log(`${label.padEnd(10)} session delivery ${delivery.toFixed(1)}%   new handshake ${Number.isFinite(hsMs) ? `${hsMs.toFixed(0)} ms` : 'none in 20 s'}`);
    return { delivery, hsMs };
  };

  const base = await measure('no flood');

  // 1024 distinct initiations with a valid MAC1 for B (random contents otherwise), sent in a loop.
  const gen = new CookieGenerator(c, b.pub);
  const msgs = Array.from({ length: 1024 }, () => {
    const m = marshalInitiation({
      sender: c.randomBytes(4).reduce((x, y) => x * 256 + y, 0) >>> 0,
      ephemeral: c.publicKey(c.generatePrivateKey()),
      static: c.randomBytes(48),
      timestamp: c.randomBytes(28),
      mac1: new Uint8Array(16),
      mac2: new Uint8Array(16),
    });
    gen.addMacs(m, 0);
    return m;
  });
  /** One flood thread sending `msgs` round robin from sockets bound to `sources` (loopback addresses). */
  const floodFrom = async (label: string, sources: string[]) => {
    const counter = new SharedArrayBuffer(4);
    const worker = new Worker(
      `const dgram = require('node:dgram');
       const { workerData } = require('node:worker_threads');
       const sent = new Int32Array(workerData.counter);
       const socks = workerData.sources.map((a) => { const s = dgram.createSocket('udp4'); s.bind(0, a); return s; });
       let i = 0, inflight = 0;
       const pump = () => {
         while (inflight < 256) {
           inflight++;
           Atomics.add(sent, 0, 1);
           socks[i % socks.length].send(workerData.msgs[i++ % workerData.msgs.length], workerData.port, '127.0.0.1', () => { inflight--; setImmediate(pump); });
         }
       };
       setTimeout(pump, 100);`,
      { eval: true, workerData: { msgs, port: b.ep.port, counter, sources } },
    );
    const before = { ...b.dev.stats.dropped, cookies: b.dev.stats.cookieRepliesSent };
    await sleep(500);
    const t0 = performance.now();
    const flood = await measure(label);
    await worker.terminate();
    const floodSent = Atomics.load(new Int32Array(counter), 0);
    const secs = (performance.now() - t0 + 500) / 1000;
    const d = b.dev.stats.dropped;
    console.log(
      `  ${sources.length} source(s): ${floodSent} initiations (~${Math.round(floodSent / secs)}/s); device: ${b.dev.stats.cookieRepliesSent - before.cookies} cookie replies, ` +
        `${d.rateLimited - before.rateLimited} rate-limited before any hash, ${d.cookieBudget - before.cookieBudget} refused a reply (global budget / quiet period)`,
    );
    console.log(`  ratios ${label}/no-flood: session delivery ${(flood.delivery / base.delivery).toFixed(2)}, new-handshake time ${(flood.hsMs / base.hsMs).toFixed(1)}x`);
  };
  await floodFrom('flood', ['127.0.0.2']);
  // Many sources (as a spoofed flood would look): 1024 loopback addresses, each under its own bucket.
  await floodFrom('flood x1024', Array.from({ length: 1024 }, (_, i) => `127.8.${(i >> 8) + 1}.${i & 255}`));
  await a.dev.close();
  await b.dev.close();
}

await main();
