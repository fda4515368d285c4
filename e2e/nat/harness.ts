/**
 * Services on the public segment (coturn for STUN, nats-server for signalling, the TCP relay) and the
 * two site processes, each a child running e2e/nat/fixtures/site.ts inside its netns.
 */
import { execa, type ResultPromise } from 'execa';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { decodeRelaySecret, newRelaySecret, relayCredential } from '../../src/nat/relay-credential.js';
import { SodiumCrypto } from '../../src/wg/crypto.js';
import { buildTopology, type SiteNat, type Topology } from './topology.js';
import { requireBinaries, requireRoot } from '../support/env.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
const crypto = new SodiumCrypto();

export const TURN_USER = 'lattice';
export const TURN_PASS = 'test-pass';
/** The relay's secret; each site gets only the credential for its own id. */
const RELAY_SECRET = newRelaySecret();

/** The NAT lab's components: root for namespaces, coturn, nats-server, nftables, iproute2. */
export async function requireLabComponents(): Promise<void> {
  requireRoot();
  await requireBinaries('turnserver', 'nats-server', 'nft', 'ip');
}

async function waitLine(child: ResultPromise, re: RegExp, what: string, ms = 60_000): Promise<void> {
  const stream = child.stdout!;
  let buf = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} did not start in ${ms} ms: ${buf.slice(-500)}`)), ms);
    const onData = (d: Buffer) => {
      buf += d.toString();
      if (re.test(buf)) {
        clearTimeout(t);
        stream.off('data', onData);
        resolve();
      }
    };
    stream.on('data', onData);
    void child.catch(() => undefined).then(() => reject(new Error(`${what} exited: ${buf.slice(-500)}`)));
  });
}

async function waitTcp(ns: string, host: string, port: number, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await execa('ip', ['netns', 'exec', ns, 'bash', '-c', `exec 3<>/dev/tcp/${host}/${port}`], { reject: false });
    if (r.exitCode === 0) return;
    if (Date.now() > end) throw new Error(`nothing listening on ${host}:${port} in ${ns}`);
    await new Promise((r2) => setTimeout(r2, 50));
  }
}

export interface SiteProcess {
  child: ResultPromise;
  port: number;
  request<T = Record<string, unknown>>(cmd: Record<string, unknown>): Promise<T>;
  status(): Promise<SiteStatus>;
  stop(): Promise<void>;
  stderr(): string;
}

export interface SiteStatus {
  paths: { peerId: string; kind: string | null; via: string | null; endpoint: string | null; rttMs: number | null; establishMs: number | null; switches: number; pairs: unknown[] }[];
  candidates: { type: string; address: string; port: number }[];
  mux: { wireguard: number; stun: number; garbage: number };
  device: { handshakes: number; rxPackets: number; txPackets: number; dropped: number; endpoint: string | null };
  rx: Record<string, { count: number; maxSeq: number; lastAt: number }>;
  sent: Record<string, number>;
  firstHandshakeMs?: number;
  firstHandshakeFromConnMs?: number;
  relay?: { connects: number };
  ice?: { sent: number; received: number; rebuilds: number; badSignals: number };
  turn?: { sent: number; received: number; rebuilds: number; badSignals: number };
  port: number;
}

export interface Lab {
  topo: Topology;
  tmp: string;
  a: SiteProcess;
  b: SiteProcess;
  close(): Promise<void>;
}

export interface LabOptions {
  prefix: string;
  tmp: string;
  nat: { a: SiteNat; b: SiteNat };
  autoPing?: boolean;
  /** The TCP relay (default on). */
  relay?: boolean;
  /** ICE through node-datachannel with coturn as STUN server (default off). */
  ice?: boolean;
  /** TURN through coturn, an ICE link restricted to relay candidates (default off). */
  turn?: boolean;
  /** Direct UDP paths (default on). */
  direct?: boolean;
}

export async function startLab(opts: LabOptions): Promise<Lab> {
  const topo = await buildTopology(opts.prefix, opts.nat);
  const children: ResultPromise[] = [];
  const sites: SiteProcess[] = [];
  const close = async () => {
    for (const s of sites) await s.stop().catch(() => undefined);
    for (const c of children.reverse()) {
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 3000);
      await c.catch(() => undefined);
      clearTimeout(t);
    }
    await topo.destroy();
  };
  try {
    const pub = topo.pubAddress;
    // coturn: STUN (and TURN with a test user) on the public segment only.
    const turnConf = join(opts.tmp, 'turnserver.conf');
    await writeFile(
      turnConf,
      [
        `listening-ip=${pub}`,
        'listening-port=3478',
        `relay-ip=${pub}`,
        'min-port=49160',
        'max-port=49200',
        'fingerprint',
        'lt-cred-mech',
        `user=${TURN_USER}:${TURN_PASS}`,
        'realm=lattice.test',
        'no-tls',
        'no-dtls',
        'no-cli',
        'no-multicast-peers',
        `pidfile=${join(opts.tmp, 'turnserver.pid')}`,
        `userdb=${join(opts.tmp, 'turndb')}`,
        `log-file=${join(opts.tmp, 'turn.log')}`,
        'simple-log',
        'verbose',
        '',
      ].join('\n'),
    );
    const turn = execa('ip', ['netns', 'exec', topo.pubNs, 'turnserver', '-c', turnConf], { reject: false, stdin: 'ignore' });
    children.push(turn);
    const nats = execa('ip', ['netns', 'exec', topo.pubNs, 'nats-server', '-a', pub, '-p', '4222'], { reject: false, stdin: 'ignore' });
    children.push(nats);
    const relay = execa('ip', ['netns', 'exec', topo.pubNs, process.execPath, '--import', 'tsx', 'e2e/nat/fixtures/relay.ts', pub, '4443', RELAY_SECRET], {
      cwd: REPO,
      reject: false,
      stdin: 'ignore',
    });
    children.push(relay);
    await Promise.all([
      waitLine(relay, /ready/, 'relay server'),
      waitTcp(topo.pubNs, pub, 4222),
      waitTcp(topo.pubNs, pub, 3478),
    ]);
    const keys = { a: crypto.generatePrivateKey(), b: crypto.generatePrivateKey() };
    const b64 = (k: Uint8Array) => Buffer.from(k).toString('base64');
    const overlay = { a: '10.99.0.1', b: '10.99.0.2' };
    for (const name of ['a', 'b'] as const) {
      const other = name === 'a' ? 'b' : 'a';
      const cfg = {
        selfId: `site-${name}`,
        peerId: `site-${other}`,
        privateKey: b64(keys[name]),
        peerPublicKey: b64(crypto.publicKey(keys[other])),
        overlay: overlay[name],
        peerOverlay: overlay[other],
        natsUrl: `nats://${pub}:4222`,
        stunServers: [`stun:${pub}:3478`],
        relayUrl: opts.relay === false ? undefined : `tcp://${pub}:4443`,
        relayToken: relayCredential(decodeRelaySecret(RELAY_SECRET)!, `site-${name}`),
        ice: opts.ice ?? false,
        direct: opts.direct ?? true,
        turnServers: opts.turn ? [`turn:${TURN_USER}:${TURN_PASS}@${pub}:3478`] : undefined,
        port: 51820,
        namespace: 'e2e',
        // Only site A sends first: if both initiate at once, the crossed handshakes both fail and
        // WireGuard retries after RekeyTimeout (5 s), which is the device's behaviour, not the path's.
        autoPing: name === 'a' && (opts.autoPing ?? false),
      };
      sites.push(await startSite(topo.sites[name].hostNs, cfg));
    }
    return { topo, tmp: opts.tmp, a: sites[0], b: sites[1], close };
  } catch (err) {
    await close();
    throw err;
  }
}

async function startSite(ns: string, cfg: Record<string, unknown>): Promise<SiteProcess> {
  const child = execa('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', 'e2e/nat/fixtures/site.ts'], {
    cwd: REPO,
    reject: false,
    env: { LTNAT_CONFIG: JSON.stringify(cfg) },
    stdin: 'pipe',
  });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-4000);
  });
  const waiting = new Map<number, (v: Record<string, unknown>) => void>();
  let ready: (p: number) => void = () => undefined;
  const readyP = new Promise<number>((r) => (ready = r));
  const rl = createInterface({ input: child.stdout! });
  rl.on('line', (line) => {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if (m.ev === 'ready') ready(m.port as number);
    const id = m.id as number | undefined;
    if (id !== undefined) {
      waiting.get(id)?.(m);
      waiting.delete(id);
    }
  });
  let nextId = 1;
  const port = await Promise.race([
    readyP,
    new Promise<number>((_, rej) => setTimeout(() => rej(new Error(`site in ${ns} did not start: ${err}`)), 20_000)),
    child.then(() => {
      throw new Error(`site in ${ns} exited: ${err}`);
    }),
  ]);
  const request = <T,>(cmd: Record<string, unknown>): Promise<T> => {
    const id = nextId++;
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`site ${ns} did not answer ${JSON.stringify(cmd)}: ${err}`)), 10_000);
      waiting.set(id, (v) => {
        clearTimeout(t);
        resolve(v as T);
      });
      child.stdin!.write(JSON.stringify({ ...cmd, id }) + '\n');
    });
  };
  return {
    child,
    port,
    request,
    status: () => request<SiteStatus>({ cmd: 'status' }),
    stderr: () => err,
    async stop() {
      if (child.exitCode !== null) return;
      child.stdin!.write(JSON.stringify({ cmd: 'exit' }) + '\n');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await child;
      clearTimeout(t);
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait for `fn` to return a value; `ms` is a safety net against a hang on a loaded machine, not a window. */
export async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 60_000, every = 100): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(every);
  }
}
