/**
 * The sandbox's network end to end: a real runsc sandbox whose only way out is lattice's TypeScript
 * WireGuard peer, talking to a real wireguard-go peer (in its own netns) that serves HTTP.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice, REPO } from '../support/env.js';
import { startWgPeer, genKeypair, waitFor, type WgPeer } from '../support/wgpeer.js';

const SANDBOX_PORT = 51998;
const SANDBOX_IP = '10.77.0.2';
const PEER_IP = '10.77.0.10';
const ABSENT_IP = '10.77.0.11';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let peer: WgPeer;
let wgConf: string;
let stateDir: string;

interface AuditLine {
  type: string;
  verdict?: string;
  ruleId?: string;
  dstIp?: string;
  dstPort?: number;
  direction?: string;
  name?: string;
}

async function writePolicy(name: string, policy: object): Promise<string> {
  const file = join(work.path, `${name}.json`);
  await writeFile(file, JSON.stringify(policy));
  return file;
}

const webOnly = (mode = 'enforce', extra: object[] = [], ingress: object[] = []) => ({
  version: 1,
  mode,
  egress: [{ id: 'web', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [8080], protocol: 'tcp' }, ...extra],
  ingress,
});

/** Run a shell script in a networked sandbox; returns the result and the audit lines it produced. */
async function sandbox(policyFile: string, script: string, extra: string[] = []) {
  const auditLog = join(work.path, `audit-${Date.now()}-${Math.random().toString(16).slice(2)}.ndjson`);
  const r = await lattice(stateDir, [
    'sandbox', 'run', '--rootfs', rootfs, '--wg-config', wgConf, '--policy', policyFile, '--audit-log', auditLog,
    '--dns-name', `web.team.lattice=${PEER_IP}`, ...extra, '--', 'sh', '-c', script,
  ], { timeout: 90_000 });
  return { ...r, audit: await readAudit(auditLog) };
}

async function readAudit(file: string): Promise<AuditLine[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditLine);
}

const GET = (host: string, port: number) => `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 4 ${host} ${port}`;

beforeAll(async () => {
  for (const bin of ['runsc', 'wireguard-go', 'wg', 'gcc', 'python3']) await requireBinary(bin);
  work = await tempDir('lt-e2e-net');
  rootfs = await busyboxRootfs(work.path);
  // A raw-socket packet forger for the anti-spoofing test, built static so it runs in the busybox rootfs.
  await execa('gcc', ['-static', '-O2', '-o', join(rootfs, 'bin', 'forge'), join(REPO, 'e2e/network/fixtures/forge.c')]);
  stateDir = join(work.path, 'state');
  const keys = await genKeypair();
  // The peer accepts any source in the overlay from us, so only lattice's anti-spoofing stands
  // between a forged packet and the peer.
  peer = await startWgPeer({
    prefix: 'ltnete',
    dir: work.path,
    sandboxPublicKey: keys.publicKey,
    sandboxPort: SANDBOX_PORT,
    sandboxAllowedIPs: '10.77.0.0/24',
    overlay: PEER_IP,
    httpPorts: [8080, 8081],
  });
  wgConf = join(work.path, 'wg.conf');
  await writeFile(
    wgConf,
    `[Interface]\nPrivateKey = ${keys.privateKey}\nAddress = ${SANDBOX_IP}/32\nListenPort = ${SANDBOX_PORT}\n\n` +
      `[Peer]\nPublicKey = ${peer.publicKey}\nAllowedIPs = 10.77.0.0/24\nEndpoint = ${peer.endpoint}\nPersistentKeepalive = 5\n`,
    { mode: 0o600 },
  );
});

afterAll(async () => {
  await peer?.stop();
  await work?.remove();
});

describe('sandbox network: gVisor -> TUN -> TypeScript WireGuard -> wireguard-go', () => {
  it('reaches the allowed port; a denied port and a denied address fail; the audit names each decision', async () => {
    const policy = await writePolicy('web', webOnly());
    const r = await sandbox(policy, `${GET(PEER_IP, 8080)}; echo "allowed=$?"; ${GET(PEER_IP, 8081)}; echo "port=$?"; ${GET(ABSENT_IP, 8080)}; echo "addr=$?"`);
    expect(r.stdout).toContain('hello from the peer');
    expect(r.stdout).toMatch(/allowed=0/);
    expect(r.stdout).toMatch(/port=[1-9]/);
    expect(r.stdout).toMatch(/addr=[1-9]/);
    expect(String(r.stdout).match(/hello from the peer/g)).toHaveLength(1);
    const opened = r.audit.filter((e) => e.type === 'flow.opened');
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'allowed', ruleId: 'web', dstIp: PEER_IP, dstPort: 8080 }));
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'denied', ruleId: 'default-deny', dstIp: PEER_IP, dstPort: 8081 }));
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'denied', ruleId: 'default-deny', dstIp: ABSENT_IP }));
    expect(r.audit).toContainEqual(expect.objectContaining({ type: 'flow.closed', dstPort: 8080 }));
  });

  it('audit mode lets the denied request through and records would-deny', async () => {
    const policy = await writePolicy('audit', webOnly('audit'));
    const r = await sandbox(policy, `${GET(PEER_IP, 8081)}; echo "port=$?"`);
    expect(r.stdout).toContain('hello from the peer');
    expect(r.stdout).toMatch(/port=0/);
    expect(r.audit).toContainEqual(expect.objectContaining({ type: 'flow.opened', verdict: 'would-deny', dstPort: 8081 }));
  });

  it('a rule with expiresAt allows until that instant and denies after it', async () => {
    const expiresAt = new Date(Date.now() + 12_000).toISOString();
    const policy = await writePolicy('ttl', webOnly('enforce', [{ id: 'temp', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [8081], protocol: 'tcp', expiresAt }]));
    const wait = Math.ceil((Date.parse(expiresAt) - Date.now()) / 1000) + 1;
    const r = await sandbox(policy, `${GET(PEER_IP, 8081)}; echo "before=$?"; sleep ${Math.max(wait - 4, 1)}; while [ "$(date +%s)" -le ${Math.floor(Date.parse(expiresAt) / 1000)} ]; do sleep 1; done; sleep 1; ${GET(PEER_IP, 8081)}; echo "after=$?"`);
    expect(r.stdout).toMatch(/before=0/);
    expect(r.stdout).toMatch(/after=[1-9]/);
    const verdicts = r.audit.filter((e) => e.type === 'flow.opened' && e.dstPort === 8081).map((e) => `${e.verdict}:${e.ruleId}`);
    // First the allowed flow; after the expiry only denials (stray segments of the cut flow included).
    expect(verdicts[0]).toBe('allowed:temp');
    expect(verdicts.length).toBeGreaterThanOrEqual(2);
    expect(new Set(verdicts.slice(1))).toEqual(new Set(['denied:default-deny']));
  });

  it('the peer cannot open a connection into the sandbox unless an ingress rule allows it', async () => {
    // The sandbox listens; once it says so, the peer knocks (a few times, so a slow start cannot hide a pass).
    const attempt = async (policyFile: string) => {
      const auditLog = join(work.path, `audit-ingress-${Date.now()}.ndjson`);
      const child: ResultPromise = lattice(stateDir, [
        'sandbox', 'run', '--rootfs', rootfs, '--wg-config', wgConf, '--policy', policyFile, '--audit-log', auditLog,
        '--', 'sh', '-c', 'echo listening; nc -l -p 9000 -w 15 > /tmp/got & sleep 12; echo "got=$(cat /tmp/got)"',
      ]);
      let out = '';
      child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor(async () => out.includes('listening'), 30_000, 'sandbox listening');
      await new Promise((r) => setTimeout(r, 1500));
      const knock = await peer.exec(['sh', '-c', `for i in 1 2 3; do echo knock | busybox nc -w 2 ${SANDBOX_IP} 9000 && echo ok && break; sleep 1; done; true`]);
      await child;
      return { out, knock: String(knock.stdout), audit: await readAudit(auditLog) };
    };
    const denied = await attempt(await writePolicy('no-ingress', webOnly()));
    expect(denied.out).not.toContain('got=knock');
    expect(denied.knock).not.toContain('ok');
    expect(denied.audit).toContainEqual(expect.objectContaining({ type: 'flow.opened', direction: 'ingress', verdict: 'denied', dstPort: 9000 }));

    const allowed = await attempt(await writePolicy('ingress', webOnly('enforce', [], [{ id: 'knock', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [9000], protocol: 'tcp' }])));
    expect(allowed.out).toContain('got=knock');
    expect(allowed.audit).toContainEqual(expect.objectContaining({ type: 'flow.opened', direction: 'ingress', verdict: 'allowed', ruleId: 'knock' }));
  });

  it('resolves a peer\'s overlay name; an unlisted name does not resolve', async () => {
    const policy = await writePolicy('dns', webOnly());
    const r = await sandbox(policy, `nslookup web.team.lattice; echo "peer=$?"; nslookup nothing.example.com; echo "other=$?"; ${GET('web.team.lattice', 8080)}`);
    expect(r.stdout).toMatch(/Address:?\s+10\.77\.0\.10/);
    expect(r.stdout).toMatch(/peer=0/);
    expect(r.stdout).toMatch(/other=[1-9]/);
    expect(r.stdout).toContain('hello from the peer');
    expect(r.audit).toContainEqual(expect.objectContaining({ type: 'dns.answered', name: 'web.team.lattice' }));
    expect(r.audit).toContainEqual(expect.objectContaining({ type: 'dns.refused', name: 'nothing.example.com' }));
  });

  it('a raw packet with a forged source address never leaves the launcher', async () => {
    const policy = await writePolicy('udp', webOnly('enforce', [{ id: 'udp', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [9999], protocol: 'udp' }]));
    // python3 is exec'd directly (no wrapper), so killing the child ends the listener.
    const udpLog = `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('${PEER_IP}', 9999))\ns.settimeout(20)\nwhile True:\n    data, (src, _) = s.recvfrom(2048)\n    print(src, data.decode(), flush=True)\n`;
    const listener = peer.exec(['python3', '-c', udpLog]);
    let heard = '';
    listener.stdout?.on('data', (d: Buffer) => (heard += d.toString()));
    await new Promise((r) => setTimeout(r, 500));
    // The same tool sends a genuine packet too: proof that raw sockets work and the peer listens.
    const r = await sandbox(policy, `forge 10.77.0.99 ${PEER_IP} 9999; echo "forged=$?"; sleep 1; forge ${SANDBOX_IP} ${PEER_IP} 9999; echo "genuine=$?"; sleep 2`, ['--cap-add', 'NET_RAW']);
    expect(r.stdout).toMatch(/forged=0/);
    expect(r.stdout).toMatch(/genuine=0/);
    await waitFor(async () => heard.length > 0, 10_000, 'genuine packet at the peer');
    await new Promise((r) => setTimeout(r, 500));
    listener.kill('SIGKILL');
    await listener;
    expect(heard).toBe(`${SANDBOX_IP} forged\n`);
    expect(r.audit.filter((e) => e.type === 'flow.opened' && e.dstPort === 9999)).toHaveLength(1);
  });

  it('live policy update: tightening the policy cuts an open flow it no longer allows', async () => {
    const policyFile = await writePolicy('live', webOnly('enforce', [{ id: 'stream', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [7000], protocol: 'tcp' }]));
    const ticker = `import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('${PEER_IP}', 7000))\ns.listen(1)\ns.settimeout(30)\nc, _ = s.accept()\nc.settimeout(1)\nend = time.time() + 25\nwhile time.time() < end:\n    try:\n        c.send(b'tick\\n')\n    except OSError:\n        pass\n    time.sleep(0.3)\n`;
    const server = peer.exec(['python3', '-c', ticker]);
    await new Promise((r) => setTimeout(r, 500));
    const auditLog = join(work.path, 'audit-live.ndjson');
    const child: ResultPromise = lattice(stateDir, [
      'sandbox', 'run', '--rootfs', rootfs, '--wg-config', wgConf, '--policy', policyFile, '--audit-log', auditLog,
      '--', 'sh', '-c', `timeout 12 nc ${PEER_IP} 7000`,
    ]);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(async () => (out.match(/tick/g) ?? []).length >= 3, 20_000, 'ticks before the update');
    await writeFile(policyFile, JSON.stringify(webOnly()));
    process.kill(child.pid!, 'SIGHUP');
    await waitFor(async () => (await readAudit(auditLog)).filter((e) => e.type === 'policy.applied').length >= 2, 5_000, 'policy reload');
    await new Promise((r) => setTimeout(r, 1000)); // ticks already in flight
    const atCut = (out.match(/tick/g) ?? []).length;
    await new Promise((r) => setTimeout(r, 3000));
    expect((out.match(/tick/g) ?? []).length).toBe(atCut);
    await child;
    server.kill('SIGKILL');
    await server;
    const audit = await readAudit(auditLog);
    expect(audit).toContainEqual(expect.objectContaining({ type: 'flow.closed', dstPort: 7000 }));
  });
});
