/**
 * `sandbox start`'s preparation (enrollAndPrepare and its network hook) against a real control plane
 * (embedded nats-server, operator mode) and a real sandbox network (netns, TUN, UDP socket): a failure
 * injected after each step leaves no NATS connection, no open file or socket, no child process, no
 * netns and no timer behind, and the outbox of the name can be taken again at once.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, readdir, readlink, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import pino from 'pino';
import { requireBinary, requireRoot, tempDir } from '../support/env.js';
import { API_BASE, startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import { enrollAndPrepare, ENROLL_STEPS, NETWORK_STEPS, type EnrollStep, type EnrolledOptions } from '../../src/sandbox/enrolled.js';
import { freePort } from '../../src/natsserver/server.js';

class InjectedFault extends Error {
  constructor(readonly step: EnrollStep) {
    super(`injected failure after ${step}`);
  }
}

let work: Awaited<ReturnType<typeof tempDir>>;
let cp: StartedControlPlane;
let natsPort: number;
const log = pino({ level: 'silent' });

/** What this process holds open: fds (by target), sockets to NATS (inodes), child processes, netns of the sandbox, timers. */
interface Held {
  fds: string[];
  natsSockets: string[];
  children: number[];
  netns: string[];
  timers: number;
}

async function held(prefix: string): Promise<Held> {
  const fds: string[] = [];
  const sockets = new Set<string>();
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => undefined);
    if (target === undefined) continue;
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) sockets.add(m[1]!);
    fds.push(target);
  }
  // /proc/net/tcp{,6}: local_address rem_address ... inode (field 9); ports in hex.
  const natsSockets: string[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of (await readFile(file, 'utf8')).split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const remPort = parseInt(f[2]!.split(':')[1]!, 16);
      if (remPort === natsPort && sockets.has(f[9]!)) natsSockets.push(f[9]!);
    }
  }
  const children: number[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === process.pid) children.push(Number(pid));
  }
  const netns = String((await execa('ip', ['netns', 'list'])).stdout)
    .split('\n')
    .filter((l) => l.includes(prefix));
  const timers = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  return { fds: fds.sort(), natsSockets, children: children.sort(), netns, timers };
}

/**
 * What `after` holds that `before` did not. Other parts of this process (the control plane, fetch's
 * keep-alive sockets) may close things in between, so only additions count.
 */
function leaked(before: Held, after: Held): Omit<Held, 'timers'> & { timers: number } {
  const minus = <T>(a: T[], b: T[]) => {
    const rest = [...b];
    return a.filter((x) => {
      const i = rest.indexOf(x);
      if (i < 0) return true;
      rest.splice(i, 1);
      return false;
    });
  };
  return {
    fds: minus(after.fds, before.fds),
    natsSockets: minus(after.natsSockets, before.natsSockets),
    children: minus(after.children, before.children),
    netns: after.netns,
    timers: Math.max(0, after.timers - before.timers),
  };
}

beforeAll(async () => {
  requireRoot();
  for (const bin of ['nats-server', 'ip']) await requireBinary(bin);
  work = await tempDir('lt-e2e-teardown');
  natsPort = await freePort();
  cp = await startControlPlane({ stateDir: join(work.path, 'cp'), natsPort, natsHost: '127.0.0.1', http: { host: '127.0.0.1', port: 0 }, log });
});

afterAll(async () => {
  await cp?.stop();
  await work?.remove();
});

describe('enrollAndPrepare: a failure at any step leaves nothing open', () => {
  it('after each step, then a clean start and close', async () => {
    const r = await fetch(`${cp.httpUrl}${API_BASE}/enrollment-tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cp.adminToken}` },
      body: JSON.stringify({ namespace: 'td', limit: 1, policy: { version: 1, mode: 'enforce', egress: [], ingress: [] } }),
    });
    expect(r.status).toBe(201);
    const token = ((await r.json()) as { token: string }).token;
    const stateDir = join(work.path, 'launcher');
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    let failAt: EnrollStep | undefined;
    const opts: EnrolledOptions = {
      stateDir,
      name: 'td1',
      controlPlaneUrl: cp.natsUrl,
      token,
      auditLog: join(work.path, 'audit.ndjson'),
      // NAT traversal on, without servers: the path bind and the signalling subscriptions are opened too.
      nat: { stunServers: [], turnServers: [], ice: false },
      statusIntervalMs: 50,
      log,
      onStep: (step) => {
        if (step === failAt) throw new InjectedFault(step);
      },
    };
    const steps: Array<EnrollStep | undefined> = [...ENROLL_STEPS, ...NETWORK_STEPS, undefined];
    for (const step of steps) {
      const id = `lt-${randomBytes(4).toString('hex')}`;
      const before = await held(id);
      failAt = step;
      if (step !== undefined && (ENROLL_STEPS as readonly string[]).includes(step)) {
        await expect(enrollAndPrepare(opts), `step ${step}`).rejects.toBeInstanceOf(InjectedFault);
      } else {
        const enrolled = await enrollAndPrepare(opts);
        const dir = join(work.path, 'sandboxes', id);
        await mkdir(dir, { recursive: true });
        if (step !== undefined) {
          await expect(enrolled.network(id, dir), `step ${step}`).rejects.toBeInstanceOf(InjectedFault);
        } else {
          const net = await enrolled.network(id, dir);
          expect((await held(id)).netns, 'the network is up while it runs').toHaveLength(1);
          await net.close();
        }
        await enrolled.close();
      }
      expect(leaked(before, await held(id)), `left open after a failure at ${step ?? '(none)'}`).toEqual({ fds: [], natsSockets: [], children: [], netns: [], timers: 0 });
    }
  }, 180_000);
});
