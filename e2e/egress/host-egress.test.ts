/**
 * Host egress end to end: `lattice sandbox run --policy FILE` (no WireGuard) under real runsc; allowed
 * flows leave through the launcher's own network (egress TUN, nftables masquerade) to a test
 * "internet" namespace; everything else is refused, and audited with its rule.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice, waitFor, REPO } from '../support/env.js';
import { egressTunName } from '../../src/egress/host.js';
import { startInternet, WEB, OTHER, DNS, type Internet } from './internet.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;
let net: Internet;

interface AuditLine {
  type: string;
  verdict?: string;
  ruleId?: string;
  dstIp?: string;
  dstPort?: number;
  srcPort?: number;
  direction?: string;
  proto?: string;
  name?: string;
  sandboxId?: string;
}

async function writePolicy(name: string, egress: object[]): Promise<string> {
  const file = join(work.path, `${name}.json`);
  await writeFile(file, JSON.stringify({ version: 1, egress }));
  return file;
}

async function readAudit(file: string): Promise<AuditLine[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditLine);
}

function runArgs(policyFile: string, auditLog: string, script: string, extra: string[] = []): string[] {
  return ['sandbox', 'run', '--rootfs', rootfs, '--policy', policyFile, '--dns-upstream', DNS, '--audit-log', auditLog, ...extra, '--', 'sh', '-c', script];
}

async function sandbox(policyFile: string, script: string, extra: string[] = []) {
  const auditLog = join(work.path, `audit-${Date.now()}-${Math.random().toString(16).slice(2)}.ndjson`);
  const r = await lattice(stateDir, runArgs(policyFile, auditLog, script, extra), { timeout: 90_000 });
  return { ...r, audit: await readAuditOf(auditLog) };
}

/** Ids of every sandbox this file started (other engineers' sandboxes may run on the same host). */
const ours = new Set<string>();

async function readAuditOf(file: string): Promise<AuditLine[]> {
  const lines = await readAudit(file);
  for (const l of lines) if (l.sandboxId) ours.add(l.sandboxId);
  return lines;
}

/** Everything of our sandboxes on the host: nftables tables, egress TUNs and their routes and iptables rules, netns. */
async function leftovers(): Promise<string[]> {
  const tables = String((await execa('nft', ['list', 'tables'])).stdout).split('\n');
  const links = String((await execa('ip', ['-o', 'link', 'show'])).stdout).split('\n');
  const routes = String((await execa('ip', ['route', 'show', 'root', '100.77.0.0/16'])).stdout).split('\n');
  const netns = String((await execa('ip', ['netns', 'list'])).stdout).split('\n');
  const iptables = String((await execa('iptables', ['-w', '-S'], { reject: false })).stdout).split('\n');
  const found: string[] = [];
  for (const id of ours) {
    const tun = egressTunName(id);
    found.push(...tables.filter((l) => l.endsWith(` lattice_egress_${id.replace(/-/g, '_')}`)));
    found.push(...links.filter((l) => l.includes(` ${tun}:`)), ...routes.filter((l) => l.includes(` ${tun}`)), ...iptables.filter((l) => l.includes(tun)));
    found.push(...netns.filter((l) => l.startsWith(`lattice-${id} `) || l === `lattice-${id}`));
  }
  return found;
}

const API = { id: 'api', action: 'allow', domains: ['api.example.test'], ports: [443], protocol: 'tcp' };

beforeAll(async () => {
  for (const bin of ['runsc', 'nft', 'ip', 'iptables', 'gcc']) await requireBinary(bin);
  work = await tempDir('lt-e2e-egress');
  rootfs = await busyboxRootfs(work.path);
  // busybox nc has no UDP mode: a tiny static UDP client does the UDP test.
  await execa('gcc', ['-static', '-O2', '-o', join(rootfs, 'bin', 'udpsend'), join(REPO, 'e2e/egress/fixtures/udpsend.c')]);
  stateDir = join(work.path, 'state');
  net = await startInternet();
});

afterAll(async () => {
  await net?.stop();
  await work?.remove();
});

describe('host egress: sandbox run --policy, no WireGuard', () => {
  it('fetches an allowed name; an unlisted name does not resolve; an unlisted address is refused fast; each is audited', async () => {
    const policy = await writePolicy('api', [API]);
    const r = await sandbox(
      policy,
      `printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 api.example.test 443; echo "api=$?"; nslookup other.example.test; echo "other=$?"; ` +
        `nc -w 5 ${OTHER} 443 </dev/null; echo "addr=$?"`,
    );
    expect(r.stdout).toContain(`hello from ${WEB}`);
    expect(r.stdout).toMatch(/api=0/);
    expect(r.stdout).toMatch(/other=[1-9]/);
    expect(r.stdout).toMatch(/addr=[1-9]/);
    expect(String(r.stderr)).toMatch(/refused/i);
    expect(r.audit).toContainEqual(expect.objectContaining({ type: 'dns.answered', name: 'api.example.test' }));
    expect(r.audit).toContainEqual(expect.objectContaining({ type: 'dns.refused', name: 'other.example.test' }));
    const opened = r.audit.filter((e) => e.type === 'flow.opened');
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'allowed', ruleId: 'api', dstIp: WEB, dstPort: 443 }));
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'denied', ruleId: 'default-deny', dstIp: OTHER, dstPort: 443 }));
    expect(net.events.filter((e) => e.ev === 'dns').map((e) => e.name)).not.toContain('other.example.test');
    expect(await leftovers()).toEqual([]);
  });

  it('bad input exits 2 and creates nothing', async () => {
    const before = await readdir(join(stateDir, 'sandboxes')).catch(() => []);
    const badPolicy = join(work.path, 'bad.json');
    await writeFile(badPolicy, JSON.stringify({ version: 1, egress: [{ id: 'x', action: 'allow', domains: ['h.example.test'], allowHostAccess: true }] }));
    const cases = [
      ['--policy', badPolicy],
      ['--policy', join(work.path, 'absent.json')],
      ['--egress', 'sideways'],
      ['--dns-upstream', 'dns.example.test'],
    ];
    for (const flags of cases) {
      const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, ...flags, '--', 'true']);
      expect(r.exitCode, flags.join(' ')).toBe(2);
      expect(String(r.stderr).trim().split('\n')).toHaveLength(1);
    }
    expect(await readdir(join(stateDir, 'sandboxes')).catch(() => [])).toEqual(before);
  });

  it('UDP to an allowed address and ICMP echo under a rule work', async () => {
    const policy = await writePolicy('udp-icmp', [
      { id: 'echo', action: 'allow', cidrs: [`${WEB}/32`], ports: [7], protocol: 'udp' },
      { id: 'ping', action: 'allow', cidrs: [`${WEB}/32`], protocol: 'icmp' },
    ]);
    const r = await sandbox(policy, `udpsend ${WEB} 7 hi; echo "udp=$?"; ping -c 1 -W 5 ${WEB}; echo "ping=$?"`, ['--cap-add', 'NET_RAW']);
    expect(r.stdout).toContain('echo:hi');
    expect(r.stdout).toMatch(/ping=0/);
    const opened = r.audit.filter((e) => e.type === 'flow.opened');
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'allowed', ruleId: 'echo', proto: 'udp', dstIp: WEB, dstPort: 7 }));
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'allowed', ruleId: 'ping', dstIp: WEB }));
  });

  it("the host's services and 169.254.169.254 are refused even under an allow-everything rule; an allowHostAccess rule opens one", async () => {
    const server: Server = createServer((_req, res) => res.end('host service\n'));
    await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const everything = await writePolicy('everything', [{ id: 'everything', action: 'allow', cidrs: ['0.0.0.0/0'], allowAnyAddress: true }]);
      const get = (host: string, p: number) => `printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 ${host} ${p}`;
      const r = await sandbox(everything, `${get(net.hostAddr, port)}; echo "host=$?"; ${get('169.254.169.254', 80)}; echo "meta=$?"; ${get(WEB, 443)}; echo "web=$?"`);
      expect(r.stdout).not.toContain('host service');
      expect(r.stdout).toMatch(/host=[1-9]/);
      expect(r.stdout).toMatch(/meta=[1-9]/);
      expect(r.stdout).toContain(`hello from ${WEB}`);
      const opened = r.audit.filter((e) => e.type === 'flow.opened');
      expect(opened).toContainEqual(expect.objectContaining({ verdict: 'denied', ruleId: 'host-services', dstIp: net.hostAddr, dstPort: port }));
      expect(opened).toContainEqual(expect.objectContaining({ verdict: 'denied', ruleId: 'host-services', dstIp: '169.254.169.254', dstPort: 80 }));
      expect(opened).toContainEqual(expect.objectContaining({ verdict: 'allowed', ruleId: 'everything', dstIp: WEB }));

      const named = await writePolicy('host', [{ id: 'host', action: 'allow', cidrs: [`${net.hostAddr}/32`], ports: [port], protocol: 'tcp', allowHostAccess: true }]);
      const ok = await sandbox(named, `${get(net.hostAddr, port)}; echo "host=$?"`);
      expect(ok.stdout).toContain('host service');
      expect(ok.audit).toContainEqual(expect.objectContaining({ type: 'flow.opened', verdict: 'allowed', ruleId: 'host', dstIp: net.hostAddr }));
    } finally {
      server.close();
    }
  });

  it('two sandboxes with different policies run at once without seeing each other\'s allowances', async () => {
    const a = await writePolicy('only-web', [{ id: 'web', action: 'allow', cidrs: [`${WEB}/32`], ports: [443, 8000], protocol: 'tcp' }]);
    const b = await writePolicy('only-other', [{ id: 'other', action: 'allow', cidrs: [`${OTHER}/32`], ports: [443, 8000], protocol: 'tcp' }]);
    // Each waits at the server's barrier, which answers only while both wait: they overlap in time.
    const script = (mine: string, theirs: string) =>
      `nc -w 60 ${mine} 8000 </dev/null; echo "barrier=$?"; nc -w 5 ${theirs} 443 </dev/null; echo "theirs=$?"`;
    const [ra, rb] = await Promise.all([sandbox(a, script(WEB, OTHER)), sandbox(b, script(OTHER, WEB))]);
    for (const r of [ra, rb]) {
      expect(r.stdout).toContain('go');
      expect(r.stdout).toMatch(/barrier=0/);
      expect(r.stdout).toMatch(/theirs=[1-9]/);
    }
    expect(ra.audit).toContainEqual(expect.objectContaining({ type: 'flow.opened', verdict: 'denied', ruleId: 'default-deny', dstIp: OTHER }));
    expect(rb.audit).toContainEqual(expect.objectContaining({ type: 'flow.opened', verdict: 'denied', ruleId: 'default-deny', dstIp: WEB }));
    expect(await leftovers()).toEqual([]);
  });

  it('a live policy update cuts an open flow to the internet that the new policy no longer allows', async () => {
    const policyFile = await writePolicy('live', [API]);
    const auditLog = join(work.path, 'audit-live.ndjson');
    // The agent keeps the server's ticks (one every 0.3 s) in a file and reports how many it has when the test asks.
    const child: ResultPromise = lattice(
      stateDir,
      runArgs(
        policyFile,
        auditLog,
        `(printf "GET /stream HTTP/1.0\\r\\n\\r\\n"; sleep 600) | nc api.example.test 443 > /tmp/ticks & while read q; do echo "count=$(grep -c tick /tmp/ticks)"; done`,
      ),
    );
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const count = async (): Promise<number> => {
      const before = (out.match(/count=\d+/g) ?? []).length;
      child.stdin!.write('count\n');
      await waitFor(() => (out.match(/count=\d+/g) ?? []).length > before, 60_000, 'the agent to report');
      return Number(out.match(/count=(\d+)/g)!.at(-1)!.slice(6));
    };
    await waitFor(async () => (await count()) >= 3, 60_000, 'ticks before the update');
    await writeFile(policyFile, JSON.stringify({ version: 1, egress: [] }));
    process.kill(child.pid!, 'SIGHUP');
    // The cut is the flow.closed event; after it the server's segments are refused (denied ingress from
    // port 443 in the audit). Once one has been refused, nothing more of that flow can be in flight.
    await waitFor(async () => (await readAudit(auditLog)).some((e) => e.type === 'flow.closed' && e.dstPort === 443), 60_000, 'the flow to be cut');
    const atCut = await count();
    const refused = async () => (await readAudit(auditLog)).filter((e) => e.type === 'flow.opened' && e.verdict === 'denied' && e.srcPort === 443).length;
    await waitFor(async () => (await refused()) >= 1, 60_000, 'a segment of the cut flow to be refused');
    expect(await count()).toBe(atCut);
    child.stdin!.end();
    await child;
    const audit = await readAuditOf(auditLog);
    expect(audit).toContainEqual(expect.objectContaining({ type: 'flow.opened', verdict: 'allowed', ruleId: 'api', dstIp: WEB }));
    expect(audit).toContainEqual(expect.objectContaining({ type: 'flow.closed', dstIp: WEB, dstPort: 443 }));
  });

  it('a launcher killed with -9 leaves state that gc removes: no table, route, device, netns or iptables rule of ours', async () => {
    expect(await leftovers()).toEqual([]);
    const policy = await writePolicy('kill', [API]);
    const child: ResultPromise = lattice(stateDir, runArgs(policy, join(work.path, 'audit-kill.ndjson'), 'echo up; sleep 120'));
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const auditLog = join(work.path, 'audit-kill.ndjson');
    await waitFor(async () => out.includes('up') && (await readAuditOf(auditLog)).length > 0, 30_000, 'sandbox up');
    expect((await leftovers()).length).toBeGreaterThan(0);
    // The sandbox keeps the launcher's stdout open, so wait for the launcher's own exit, not for its pipes.
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    const gc = await lattice(stateDir, ['gc']);
    expect(gc.exitCode).toBe(0);
    expect(await leftovers()).toEqual([]);
    await child;
  });
});

