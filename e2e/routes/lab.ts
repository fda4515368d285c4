/**
 * The routes e2e's lab: four network namespaces with a random prefix, the control plane in one.
 *
 *   <p>-pub: br0 198.18.0.1/24   nats-server :4222, control plane (admin API on 127.0.0.1:<httpPort>)
 *   <p>-r:   eth0 198.18.0.21    the router / exit node (`lattice up`)
 *   <p>-b:   eth0 198.18.0.22    the sandbox's host
 *   <p>-s:   behind the router, wired by the test's `behind(r, s)`
 *
 * stop() kills every child (SIGTERM, then SIGKILL) and removes the namespaces and the work dir.
 */
import { execa, type ResultPromise } from 'execa';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, requireRoot, tempDir, waitFor, CLI, REPO } from '../support/env.js';
import { createNetns, deleteNetns, ip } from '../../src/netns/ip.js';

export const NATS = 'nats://198.18.0.1:4222';

export interface Lab {
  pub: string;
  r: string;
  s: string;
  b: string;
  work: string;
  children: ResultPromise[];
  /** The CLI inside netns `ns` with state dir `state` (under the work dir). */
  inNs(ns: string, state: string, args: string[]): ResultPromise;
  /** `lattice <args> --api ...` against the control plane. */
  admin(args: string[]): ResultPromise;
  stop(): Promise<void>;
}

/** Collect a child's output into a getter. */
export function collect(c: ResultPromise, stream: 'stdout' | 'stderr'): () => string {
  let s = '';
  c[stream]?.on('data', (d: Buffer) => (s += d.toString()));
  return () => s;
}

export async function startLab(prefix: string, httpPort: number, behind: (r: string, s: string) => Promise<void>): Promise<Lab> {
  requireRoot();
  for (const bin of ['runsc', 'nats-server', 'nft', 'nsenter', 'busybox']) await requireBinary(bin);
  const dir = await tempDir(`lt-e2e-${prefix}`);
  const [pub, r, s, b] = ['pub', 'r', 's', 'b'].map((x) => `${prefix}-${x}`) as [string, string, string, string];
  const children: ResultPromise[] = [];
  const made: string[] = [];
  const inNs = (ns: string, state: string, args: string[]) =>
    execa('nsenter', [`--net=/var/run/netns/${ns}`, process.execPath, CLI, '--state-dir', join(dir.path, state), ...args], { reject: false, stdin: 'ignore' });
  const stop = async () => {
    for (const c of children.reverse()) {
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      await c.catch(() => undefined);
      clearTimeout(t);
    }
    for (const n of made.reverse()) await deleteNetns(n).catch(() => undefined);
    await dir.remove();
  };
  try {
    for (const n of [pub, r, s, b]) {
      await createNetns(n);
      made.push(n);
      await ip(['link', 'set', 'lo', 'up'], n);
    }
    await ip(['link', 'add', 'br0', 'type', 'bridge'], pub);
    await ip(['addr', 'add', '198.18.0.1/24', 'dev', 'br0'], pub);
    await ip(['link', 'set', 'br0', 'up'], pub);
    for (const [n, addr, side] of [[r, '198.18.0.21', 'hr'], [b, '198.18.0.22', 'hb']] as const) {
      await ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', side, 'netns', pub], n);
      await ip(['link', 'set', side, 'master', 'br0', 'up'], pub);
      await ip(['addr', 'add', `${addr}/24`, 'dev', 'eth0'], n);
      await ip(['link', 'set', 'eth0', 'up'], n);
    }
    await behind(r, s);
    const jsDir = join(dir.path, 'js');
    await mkdir(jsDir);
    children.push(execa('nsenter', [`--net=/var/run/netns/${pub}`, 'nats-server', '-a', '198.18.0.1', '-p', '4222', '-js', '-sd', jsDir], { reject: false, stdin: 'ignore' }));
    await waitFor(async () => (await execa('nsenter', [`--net=/var/run/netns/${pub}`, 'bash', '-c', 'exec 3<>/dev/tcp/198.18.0.1/4222'], { reject: false })).exitCode === 0, 60_000, 'nats-server');
    const cp = inNs(pub, 'cp', ['control-plane', 'start', '--nats', NATS, '--http', `127.0.0.1:${httpPort}`]);
    children.push(cp);
    const cpOut = collect(cp, 'stdout');
    await waitFor(() => cpOut().includes('control plane ready'), 60_000, 'control plane ready');
  } catch (err) {
    await stop();
    throw err;
  }
  return { pub, r, s, b, work: dir.path, children, inNs, admin: (args) => inNs(pub, 'cp', [...args, '--api', `http://127.0.0.1:${httpPort}`]), stop };
}

/**
 * The exit labs' namespace policy: the sandbox may reach 203.0.113.10:443 (a CIDR rule) and
 * api.example.test:443 (a domain rule), nothing else of the internet.
 */
export const EXIT_POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [
    { id: 'web', action: 'allow', cidrs: ['203.0.113.10/32'], ports: [443], protocol: 'tcp' },
    { id: 'api', action: 'allow', domains: ['api.example.test'], ports: [443], protocol: 'tcp' },
  ],
  // The exit node's own policy: forwarded flows are ingress to it, from the overlay; so are the DNS
  // queries its forwarder answers on its overlay address.
  ingress: [
    { id: 'via-exit', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [443], protocol: 'tcp' },
    { id: 'exit-dns', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [53], protocol: 'udp' },
  ],
};

/** The internet's DNS server (TEST-NET-3), behind the exit node. */
export const INTERNET_DNS = '203.0.113.12';

/**
 * `behind` for an exit node's lab: the test's "internet" in `s`, reached from `r` over wan0 and knowing
 * nothing of the overlay.
 *
 *   <p>-r: wan0 198.51.100.1/30, route 203.0.113.0/24 via .2
 *   <p>-s: eth0 198.51.100.2/30, lo 203.0.113.10 .11 .12 (DNS) .13, default via .1
 */
export async function wireInternet(r: string, s: string): Promise<void> {
  await ip(['link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', s], r);
  await ip(['addr', 'add', '198.51.100.1/30', 'dev', 'wan0'], r);
  await ip(['link', 'set', 'wan0', 'up'], r);
  await ip(['route', 'add', '203.0.113.0/24', 'via', '198.51.100.2'], r);
  await ip(['addr', 'add', '198.51.100.2/30', 'dev', 'eth0'], s);
  await ip(['link', 'set', 'eth0', 'up'], s);
  for (const a of ['203.0.113.10/32', '203.0.113.11/32', `${INTERNET_DNS}/32`, '203.0.113.13/32']) await ip(['addr', 'add', a, 'dev', 'lo'], s);
  await ip(['route', 'add', 'default', 'via', '198.51.100.1'], s);
}

/**
 * The internet's servers in lab.s (children of the lab): busybox httpd on :443 of every address, answering
 * "hello-from-internet" (its -vv log names each client), and a DNS server on INTERNET_DNS
 * (e2e/egress/fixtures/internet.ts): api.example.test -> .13, other.example.test -> .11. Resolves once
 * the DNS server is ready.
 */
export async function startInternet(lab: Lab): Promise<{ httpdLog: () => string; asked: () => (string | undefined)[] }> {
  await mkdir(join(lab.work, 'www'));
  await writeFile(join(lab.work, 'www', 'index.html'), 'hello-from-internet\n');
  const httpd = execa('ip', ['netns', 'exec', lab.s, 'busybox', 'httpd', '-f', '-vv', '-p', '443', '-h', join(lab.work, 'www')], { reject: false, stdin: 'ignore' });
  lab.children.push(httpd);
  const httpdLog = collect(httpd, 'stderr');
  // One JSON line per query on stdout.
  const dns = execa('ip', ['netns', 'exec', lab.s, process.execPath, '--import', 'tsx', join(REPO, 'e2e/egress/fixtures/internet.ts'), INTERNET_DNS], {
    cwd: REPO,
    env: { NAMES: 'api.example.test=203.0.113.13,other.example.test=203.0.113.11' },
    reject: false,
    stdin: 'ignore',
  });
  lab.children.push(dns);
  const dnsOut = collect(dns, 'stdout');
  await waitFor(() => dnsOut().includes('"ready"'), 60_000, 'the internet DNS server');
  const asked = () => dnsOut().trim().split('\n').map((l) => JSON.parse(l) as { ev: string; name?: string }).filter((e) => e.ev === 'dns').map((e) => e.name);
  return { httpdLog, asked };
}

/**
 * `lattice up --name exit --exit-node` in lab.r (a child of the lab; DNS upstream: the internet's), its
 * exit routes approved by the operator (`namespace`/exit); resolves once it forwards for them.
 */
export async function startExitNode(lab: Lab, namespace: string, token: string, extra: string[] = []): Promise<{ up: ResultPromise; upErr: () => string }> {
  const up = lab.inNs(lab.r, 'state-r', ['up', '--name', 'exit', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.21', '--exit-node', '--dns-upstream', INTERNET_DNS, ...extra]);
  lab.children.push(up);
  const upErr = collect(up, 'stderr');
  await waitFor(() => upErr().includes('is up on lattice0'), 60_000, 'lattice up --exit-node');
  const ok = await lab.admin(['route', 'approve', `${namespace}/exit`, 'exit']);
  if (ok.exitCode !== 0) throw new Error(`route approve: ${String(ok.stderr)}`);
  await waitFor(() => upErr().includes('forwarding for approved routes: 0.0.0.0/0 ::/0'), 30_000, `the exit node hearing the approval (${upErr().slice(-600)})`);
  return { up, upErr };
}
