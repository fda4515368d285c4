/**
 * Control-plane figures: enrollment round trip (p50/p99, sequential), throughput under concurrency, and
 * the time to provision 100 peers, each against baselines measured in the same run (a bare NATS
 * request/reply echo and a bare JetStream KV create). Prints figures; always exits 0.
 *
 *   npx tsx bench/controlplane.ts
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'nats';
import { startControlPlane } from '../src/controlplane/index.js';
import { startNatsServer } from '../src/natsserver/server.js';
import { connectControlPlane, enroll } from '../src/enroll/index.js';
import { createUser } from '@nats-io/jwt';
import { parseJoinToken, type ControlPlaneService } from '../src/controlplane/index.js';

/**
 * Enrollment as a launcher does it (a fresh connection per enrollment) without NATS auth (the control
 * plane above, on a plain nats-server), with it (an embedded control plane in operator mode: a bootstrap
 * user from the join token, a user JWT minted per launcher), and with auth and TLS (the same, with the
 * launcher verifying the server against the pinned CA), in the same run. Then revocation: how long after
 * `agent revoke` a connected launcher's NATS connection is closed by the server (the contract: 1 s).
 */
async function authBench(dir: string, plainUrl: string, plain: ControlPlaneService): Promise<void> {
  const authed = await startControlPlane({ stateDir: join(dir, 'auth'), natsPort: 0, http: false });
  const tls = await startControlPlane({ stateDir: join(dir, 'tls'), natsPort: 0, http: false, tls: true });
  try {
    const n = 100;
    const run = async (url: string, svc: ControlPlaneService, ns: string, caPem?: string) => {
      const j = parseJoinToken((await svc.createToken({ namespace: ns, limit: n, ttl: '1h' })).token);
      const xs: number[] = [];
      for (let i = 0; i < n; i++) {
        const natsPublicKey = j.nats ? createUser().getPublicKey() : undefined;
        const t = performance.now();
        await enroll({ controlPlaneUrl: url, user: j.nats, caPem, token: j.token, name: `a${i}`, publicKey: key(), natsPublicKey });
        xs.push(performance.now() - t);
      }
      return xs;
    };
    const off = await run(plainUrl, plain, 'auth-off');
    const on = await run(authed.natsUrl, authed.service, 'auth-on');
    const onTls = await run(tls.natsUrl, tls.service, 'auth-tls', tls.tls!.caPem);
    const vs = (xs: number[]) => `(${(pct(xs, 50) / pct(off, 50)).toFixed(2)}x p50, ${(pct(xs, 99) / pct(off, 99)).toFixed(2)}x p99 of no auth)`;
    console.log(`enroll with connect, no auth            p50 ${fmt(pct(off, 50))} p99 ${fmt(pct(off, 99))}`);
    console.log(`enroll with connect, operator-mode      p50 ${fmt(pct(on, 50))} p99 ${fmt(pct(on, 99))} ${vs(on)}`);
    console.log(`enroll with connect, operator-mode+TLS  p50 ${fmt(pct(onTls, 50))} p99 ${fmt(pct(onTls, 99))} ${vs(onTls)}`);

    // Revocation -> the server closes the launcher's connection (TLS control plane, one launcher at a time).
    const closes: number[] = [];
    const j = parseJoinToken((await tls.service.createToken({ namespace: 'rev', limit: 20, ttl: '1h' })).token);
    for (let i = 0; i < 20; i++) {
      const kp = createUser();
      const r = await enroll({ controlPlaneUrl: tls.natsUrl, user: j.nats, caPem: tls.tls!.caPem, token: j.token, name: `r${i}`, publicKey: key(), natsPublicKey: kp.getPublicKey() });
      const nc = await connectControlPlane({ urls: [tls.natsUrl], caPem: tls.tls!.caPem, user: { jwt: r.nats!.jwt, seed: new TextDecoder().decode(kp.getSeed()), inboxPrefix: r.nats!.inboxPrefix } }, { name: `r${i}` });
      const gone = new Promise<number>((resolve) => {
        void nc.closed().then(() => resolve(performance.now()));
        void (async () => {
          for await (const st of nc.status()) if (st.type === 'disconnect') return resolve(performance.now());
        })();
      });
      const t = performance.now();
      await tls.service.revokeAgent('rev', `r${i}`);
      closes.push((await gone) - t);
      await nc.close().catch(() => undefined);
    }
    console.log(`revoke -> connection closed (20 launchers, TLS) p50 ${fmt(pct(closes, 50))} max ${fmt(Math.max(...closes))} (${(Math.max(...closes) / 1000).toFixed(2)}x the 1 s contract at worst)`);
  } finally {
    await tls.stop();
    await authed.stop();
  }
}

const key = () => randomBytes(32).toString('base64');
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const fmt = (ms: number) => `${ms.toFixed(2)} ms`;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ltcp-bench-'));
  const nats = await startNatsServer({ storeDir: join(dir, 'nats'), port: 0 });
  const cp = await startControlPlane({ stateDir: dir, natsUrl: nats.url, http: false });
  const nc = await connect({ servers: nats.url });
  try {
    // Baseline 1: NATS request/reply echo.
    nc.subscribe('bench.echo', { callback: (_e, m) => m.respond(m.data) });
    const echo: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t = performance.now();
      await nc.request('bench.echo', new Uint8Array(200), { timeout: 5000 });
      echo.push(performance.now() - t);
    }
    // Baseline 2: one JetStream KV create.
    const kv = await nc.jetstream().views.kv('bench_baseline', { history: 1 });
    const kvc: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t = performance.now();
      await kv.create(`k${i}`, new Uint8Array(200));
      kvc.push(performance.now() - t);
    }
    console.log(`baseline  nats echo p50 ${fmt(pct(echo, 50))} p99 ${fmt(pct(echo, 99))}; kv create p50 ${fmt(pct(kvc, 50))} p99 ${fmt(pct(kvc, 99))}`);

    // Sequential enrollments: round trip.
    const { token: seqToken } = await cp.service.createToken({ namespace: 'seq', limit: 200, ttl: '1h' });
    const rt: number[] = [];
    for (let i = 0; i < 100; i++) {
      const t = performance.now();
      await enroll({ nc, token: seqToken, name: `s${i}`, publicKey: key() });
      rt.push(performance.now() - t);
    }
    const p50 = pct(rt, 50);
    console.log(`enroll    round trip p50 ${fmt(p50)} p99 ${fmt(pct(rt, 99))} (${(p50 / pct(kvc, 50)).toFixed(1)}x a kv create, ${(p50 / pct(echo, 50)).toFixed(1)}x an echo)`);

    // 100 peers provisioned concurrently, one token per peer (no shared-token contention) and with one shared token.
    for (const shared of [false, true]) {
      const ns = shared ? 'conc-shared' : 'conc';
      const shared1 = shared ? (await cp.service.createToken({ namespace: ns, limit: 100 })).token : '';
      const tokens = shared ? [] : await Promise.all(Array.from({ length: 100 }, () => cp.service.createToken({ namespace: ns }).then((r) => r.token)));
      const t = performance.now();
      await Promise.all(Array.from({ length: 100 }, (_, i) => enroll({ nc, token: shared ? shared1 : tokens[i], name: `c${i}`, publicKey: key(), timeoutMs: 60_000 })));
      const ms = performance.now() - t;
      console.log(`provision 100 peers concurrently (${shared ? 'one shared token' : 'one token each'}): ${fmt(ms)} = ${(100_000 / ms).toFixed(0)} enrollments/s`);
    }
    await authBench(dir, nats.url, cp.service);
  } finally {
    await nc.close();
    await cp.stop();
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error('bench failed:', err);
}).finally(() => process.exit(0));
