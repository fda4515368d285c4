/**
 * NAT traversal figures: `npx tsx bench/nat.ts` (topologies need root; without it only the classifier runs).
 *
 * 1. STUN/WireGuard classification per datagram (seed target < 0.5 us), against a baseline in the same run:
 *    reading the first byte of each datagram (the least any demultiplexer must do).
 * 2. Time from a site process's start to its first completed WireGuard handshake, per topology: LAN (no NAT),
 *    both behind cone NATs (direct through hole punching), both behind symmetric NATs (relay). Seed figures:
 *    LAN < 3 s, cone < 8 s, relay < 15 s.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { classify } from '../src/nat/path-bind.js';
import { encodeStun, StunClass } from '../src/nat/stun.js';

function classifierBench(): void {
  const pkts: Uint8Array[] = [];
  for (let i = 0; i < 1024; i++) {
    const k = i % 8;
    if (k < 5) {
      const p = new Uint8Array(k === 0 ? 148 : 1452); // transport-heavy mix, as on a busy tunnel
      p[0] = k === 0 ? 1 : 4;
      pkts.push(p);
    } else if (k === 5) {
      pkts.push(encodeStun({ class: StunClass.Request, transactionId: new Uint8Array(12).fill(i & 0xff), username: 'abcd:efgh', integrityKey: 'pw', fingerprint: true }));
    } else {
      pkts.push(Uint8Array.from({ length: 64 }, (_, j) => (j * 37 + i) & 0xff | (j === 0 ? 0x80 : 0)));
    }
  }
  const N = 20_000_000;
  const run = (f: (b: Uint8Array) => number) => {
    let acc = 0;
    for (let i = 0; i < 1_000_000; i++) acc += f(pkts[i & 1023]); // warm-up
    const t = process.hrtime.bigint();
    for (let i = 0; i < N; i++) acc += f(pkts[i & 1023]);
    const ns = Number(process.hrtime.bigint() - t) / N;
    return { ns, acc };
  };
  const base = run((b) => b[0]);
  const cls = run(classify);
  console.log('STUN/WireGuard classification (mix: 62% WireGuard, 13% STUN, 25% garbage)');
  console.log(`  baseline (read first byte):  ${base.ns.toFixed(2)} ns/packet`);
  console.log(`  classify():                  ${cls.ns.toFixed(2)} ns/packet  (x${(cls.ns / base.ns).toFixed(2)} baseline; seed target 500 ns: ${(500 / cls.ns).toFixed(0)}x under)`);
}

async function topologyBench(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.log('time to first handshake: skipped (needs root for network namespaces)');
    return;
  }
  const { startLab, until } = await import('../e2e/nat/harness.js');
  const seeds = { lan: 3000, cone: 8000, symmetric: 15000 } as const;
  console.log('time from site start to first completed handshake (site A sends the first packet)');
  for (const nat of ['lan', 'cone', 'symmetric'] as const) {
    const runs: { a: number; b: number; connA: number; connB: number; kind: string }[] = [];
    for (let i = 0; i < 3; i++) {
      const tmp = await mkdtemp(join(tmpdir(), 'ltnat-bench-'));
      const lab = await startLab({ prefix: `ltnatb${process.pid % 10000}`, tmp, nat: { a: nat, b: nat }, autoPing: true });
      try {
        const [sa, sb] = await until('first handshake', async () => {
          const s = await Promise.all([lab.a.status(), lab.b.status()]);
          return s.every((x) => x.firstHandshakeMs !== undefined) ? s : undefined;
        }, 30_000, 20);
        runs.push({
          a: sa.firstHandshakeMs!,
          b: sb.firstHandshakeMs!,
          connA: sa.firstHandshakeFromConnMs!,
          connB: sb.firstHandshakeFromConnMs!,
          kind: sa.paths[0]?.kind ?? '?',
        });
      } finally {
        await lab.close();
        await rm(tmp, { recursive: true, force: true });
      }
    }
    const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    // Site A starts first and its figure includes waiting for site B's process (tsx start-up, ~1 s);
    // site B's figure is the time from "both running" to a completed handshake.
    const fromLast = med(runs.map((r) => r.b));
    const fromFirst = med(runs.map((r) => r.a));
    const label = nat === 'symmetric' ? 'relay (symmetric)' : nat;
    console.log(
      `  ${label.padEnd(18)} median of 3: ${fromLast.toFixed(0)} ms from the later site's start (${fromFirst.toFixed(0)} ms from the first's); ` +
        `path at first handshake ${runs.map((r) => r.kind).join(',')}; seed ${seeds[nat]} ms -> ${(seeds[nat] / fromLast).toFixed(1)}x faster (${(seeds[nat] / fromFirst).toFixed(1)}x from the first start)`,
    );
  }
}

classifierBench();
await topologyBench();
