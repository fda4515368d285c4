/**
 * Revocation cost against the number of agents (issue #20): revoking a delegating agent (parent + child +
 * grandchild) on a control plane holding 10 agents in all, then on one holding 3,000, each on its own real
 * nats-server in the same run. Children come from the index by parent (src/controlplane/children.ts), so the
 * ratio should stay near 1 (the issue measured ~15 ms at 12 agents and ~950 ms at 2,700 when every agent
 * was read). Prints figures; always exits 0.
 *
 *   npx tsx bench/revocation.ts [bigCount=3000]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startControlPlane } from '../src/controlplane/index.js';
import { startNatsServer } from '../src/natsserver/server.js';
import type { ControlPlaneService } from '../src/controlplane/index.js';
import { NatsKvStore } from '../src/controlplane/natskv.js';
import { BUCKETS } from '../src/controlplane/types.js';

const key = () => randomBytes(32).toString('base64');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const TREES = 3;
const PER_NAMESPACE = 250;

async function fill(svc: ControlPlaneService, others: number): Promise<void> {
  let made = 0;
  for (let ns = 0; made < others; ns++) {
    const n = Math.min(PER_NAMESPACE, others - made);
    const { token } = await svc.createToken({ namespace: `crowd${ns}`, limit: n, ttl: '1h' });
    const names = Array.from({ length: n }, (_, i) => `o${i}`);
    for (let i = 0; i < names.length; i += 16) {
      await Promise.all(names.slice(i, i + 16).map((name) => svc.enroll({ token, publicKey: key(), name })));
    }
    made += n;
  }
}

/** Enroll TREES parent -> child -> grandchild trees, then `others` more agents, then time each tree's revocation. */
async function run(total: number): Promise<{ revoke: number[]; scan: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'ltcp-revbench-'));
  const nats = await startNatsServer({ storeDir: join(dir, 'nats'), port: 0 });
  const cp = await startControlPlane({ stateDir: dir, natsUrl: nats.url, http: false });
  try {
    const svc = cp.service;
    const { token } = await svc.createToken({ namespace: 'team', allowedTools: ['list_peers', 'delegate'], limit: TREES, ttl: '1h' });
    for (let t = 0; t < TREES; t++) {
      const p = await svc.enroll({ token, publicKey: key(), name: `boss${t}` });
      const kid = await svc.enroll({ token: (await svc.delegate(p.jwt, { allowedTools: ['list_peers', 'delegate'] })).token, publicKey: key(), name: `kid${t}` });
      await svc.enroll({ token: (await svc.delegate(kid.jwt, { allowedTools: ['list_peers'] })).token, publicKey: key(), name: `grandkid${t}` });
    }
    const others = Math.max(0, total - 3 * TREES);
    await fill(svc, others);
    // What one level of the cascade cost before the index: read every agent record.
    const agents = await new NatsKvStore(cp.nc).bucket(BUCKETS.agents);
    const s0 = performance.now();
    for (const k of await agents.keys('a.*.*')) await agents.get(k);
    const scan = performance.now() - s0;
    const times: number[] = [];
    for (let t = 0; t < TREES; t++) {
      const t0 = performance.now();
      const r = await svc.revokeAgentTree('team', `boss${t}`);
      times.push(performance.now() - t0);
      if (r.children.length !== 2) throw new Error(`tree ${t}: revoked ${r.children.length} children, expected 2`);
    }
    return { revoke: times, scan };
  } finally {
    await cp.stop();
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const big = Number(process.argv[2] ?? 3000);
  const smallCount = 10;
  const small = await run(smallCount);
  const large = await run(big);
  const ms = (x: number) => `${x.toFixed(1)} ms`;
  const ratio = median(large.revoke) / median(small.revoke);
  console.log(`revoke parent+child+grandchild, ${smallCount} agents in all: median ${ms(median(small.revoke))} of ${TREES} trees`);
  console.log(`revoke parent+child+grandchild, ${big} agents in all: median ${ms(median(large.revoke))} of ${TREES} trees = ${ratio.toFixed(2)}x of ${smallCount} agents`);
  console.log(`(reading every agent once, the pre-index cost of one cascade level: ${ms(small.scan)} at ${smallCount}, ${ms(large.scan)} at ${big} = ${(large.scan / small.scan).toFixed(0)}x)`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
