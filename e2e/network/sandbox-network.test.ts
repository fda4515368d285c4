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
  srcPort?: number;
  time?: string;
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
  const auditLog = join(work.path, `audit-${++auditSeq}.ndjson`);
  const r = await lattice(stateDir, [
    'sandbox', 'run', '--rootfs', rootfs, '--wg-config', wgConf, '--policy', policyFile, '--audit-log', auditLog,
    '--dns-name', `web.team.lattice=${PEER_IP}`, ...extra, '--', 'sh', '-c', script,
  ], { timeout: 90_000 });
  return { ...r, audit: await readAudit(auditLog) };
}

/**
 * Start a networked sandbox running `script` and keep talking to it: its stdout as it comes, and lines on its
 * stdin, which the script reads (`read x`) to wait for the test: the test sets the pace, never a sleep.
 */
function startSandbox(policyFile: string, script: string, extra: string[] = []) {
  const auditLog = join(work.path, `audit-${++auditSeq}.ndjson`);
  const child: ResultPromise = lattice(stateDir, [
    'sandbox', 'run', '--rootfs', rootfs, '--wg-config', wgConf, '--policy', policyFile, '--audit-log', auditLog,
    '--dns-name', `web.team.lattice=${PEER_IP}`, ...extra, '--', 'sh', '-c', script,
  ]);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  return {
    child,
    out: () => out,
    audit: () => readAudit(auditLog),
    send: (line: string) => child.stdin!.write(`${line}\n`),
  };
}
let auditSeq = 0;

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
    // Expiry is wall-clock time: the first request must come before it. A start so slow that it missed the instant
    // shows in the audit (its denial is stamped after expiresAt); such an attempt proves nothing and is repeated
    // with a longer lead. After the first request the sandbox waits for the test, which lets the instant pass.
    for (let leadMs = 10_000; ; leadMs *= 2) {
      const expiresAt = new Date(Date.now() + leadMs).toISOString();
      const policy = await writePolicy('ttl', webOnly('enforce', [{ id: 'temp', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [8081], protocol: 'tcp', expiresAt }]));
      const run = startSandbox(policy, `${GET(PEER_IP, 8081)}; echo "before=$?"; read go; ${GET(PEER_IP, 8081)}; echo "after=$?"`);
      await waitFor(() => run.out().includes('before='), 90_000, 'the first request');
      if (!/before=0/.test(run.out())) {
        run.child.stdin!.end();
        await run.child;
        const denial = (await run.audit()).find((e) => e.type === 'flow.opened' && e.dstPort === 8081);
        expect(denial, `the first request failed without a denial: ${run.out()}`).toBeDefined();
        expect(Date.parse(denial!.time!), 'denied before expiresAt').toBeGreaterThanOrEqual(Date.parse(expiresAt));
        expect(leadMs, 'the sandbox never started within the lead').toBeLessThan(80_000);
        continue;
      }
      await waitFor(() => Date.now() > Date.parse(expiresAt) + 1000, 120_000, 'the expiry to pass');
      run.send('go');
      const r = await run.child;
      expect(r.stdout).toMatch(/after=[1-9]/);
      const verdicts = (await run.audit()).filter((e) => e.type === 'flow.opened' && e.dstPort === 8081).map((e) => `${e.verdict}:${e.ruleId}`);
      // First the allowed flow; after the expiry only denials (stray segments of the cut flow included).
      expect(verdicts[0]).toBe('allowed:temp');
      expect(verdicts.length).toBeGreaterThanOrEqual(2);
      expect(new Set(verdicts.slice(1))).toEqual(new Set(['denied:default-deny']));
      return;
    }
  });

  it('the peer cannot open a connection into the sandbox unless an ingress rule allows it', async () => {
    // The sandbox says "listening" once its socket listens, and reports what it got when the test tells it to.
    const listen = 'nc -l -p 9000 > /tmp/got & until netstat -ltn | grep -q ":9000 "; do sleep 0.1; done; echo listening; ' +
      'read cmd; [ "$cmd" = stop ] && kill $!; wait; echo "got=$(cat /tmp/got)"';
    const knock = () => peer.exec(['sh', '-c', `echo knock | busybox nc -w 2 ${SANDBOX_IP} 9000 && echo ok`]);

    const denied = startSandbox(await writePolicy('no-ingress', webOnly()), listen);
    await waitFor(() => denied.out().includes('listening'), 90_000, 'sandbox listening');
    expect(String((await knock()).stdout)).not.toContain('ok');
    await waitFor(async () => (await denied.audit()).some((e) => e.type === 'flow.opened' && e.direction === 'ingress' && e.verdict === 'denied' && e.dstPort === 9000),
      60_000, 'the denied knock in the audit');
    denied.send('stop');
    expect((await denied.child).stdout).toMatch(/^got=$/m);

    const allowed = startSandbox(await writePolicy('ingress', webOnly('enforce', [], [{ id: 'knock', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [9000], protocol: 'tcp' }])), listen);
    await waitFor(() => allowed.out().includes('listening'), 90_000, 'sandbox listening');
    await waitFor(async () => String((await knock()).stdout).includes('ok'), 60_000, 'the knock to get in');
    allowed.send('wait'); // nc -l exits once the knock's connection closes
    expect((await allowed.child).stdout).toMatch(/^got=knock$/m);
    expect(await allowed.audit()).toContainEqual(expect.objectContaining({ type: 'flow.opened', direction: 'ingress', verdict: 'allowed', ruleId: 'knock' }));
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
    const udpLog = `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('${PEER_IP}', 9999))\nprint('bound', flush=True)\nwhile True:\n    data, (src, _) = s.recvfrom(2048)\n    print(src, data.decode(), flush=True)\n`;
    const listener = peer.exec(['python3', '-c', udpLog]);
    let heard = '';
    listener.stdout?.on('data', (d: Buffer) => (heard += d.toString()));
    await waitFor(() => heard.startsWith('bound\n'), 60_000, 'the UDP listener');
    // The forged packet goes first, then a genuine one by the same tool (proof that raw sockets work and the peer
    // listens). One pump, one tunnel, one peer: they arrive in order, so once the genuine one is heard, a forged
    // one that got through would have been heard before it.
    const run = startSandbox(policy, `forge 10.77.0.99 ${PEER_IP} 9999; echo "forged=$?"; forge ${SANDBOX_IP} ${PEER_IP} 9999; echo "genuine=$?"; read done`, ['--cap-add', 'NET_RAW']);
    await waitFor(() => heard.includes(`${SANDBOX_IP} forged`), 90_000, 'genuine packet at the peer');
    run.send('done');
    const r = await run.child;
    listener.kill('SIGKILL');
    await listener;
    expect(r.stdout).toMatch(/forged=0/);
    expect(r.stdout).toMatch(/genuine=0/);
    expect(heard).toBe(`bound\n${SANDBOX_IP} forged\n`);
    expect((await run.audit()).filter((e) => e.type === 'flow.opened' && e.dstPort === 9999)).toHaveLength(1);
  });

  it('live policy update: tightening the policy cuts an open flow it no longer allows', async () => {
    const policyFile = await writePolicy('live', webOnly('enforce', [{ id: 'stream', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [7000], protocol: 'tcp' }]));
    // The server sends a numbered tick every 0.2 s until killed.
    const ticker = `import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('${PEER_IP}', 7000))\ns.listen(1)\nprint('listening', flush=True)\nc, _ = s.accept()\nc.settimeout(1)\ni = 0\nwhile True:\n    i += 1\n    try:\n        c.send(b'tick %d\\n' % i)\n    except OSError:\n        pass\n    time.sleep(0.2)\n`;
    const server = peer.exec(['python3', '-c', ticker]);
    let serverOut = '';
    server.stdout?.on('data', (d: Buffer) => (serverOut += d.toString()));
    await waitFor(() => serverOut.includes('listening'), 60_000, 'the ticker to listen');
    // The agent keeps the ticks in a file and reports how many it has when the test asks.
    const run = startSandbox(policyFile, `nc ${PEER_IP} 7000 > /tmp/ticks & while read q; do echo "count=$(grep -c tick /tmp/ticks)"; done`);
    const count = async (): Promise<number> => {
      const before = (run.out().match(/count=\d+/g) ?? []).length;
      run.send('count');
      await waitFor(() => (run.out().match(/count=\d+/g) ?? []).length > before, 60_000, 'the agent to report');
      return Number(run.out().match(/count=(\d+)/g)!.at(-1)!.slice(6));
    };
    await waitFor(async () => (await count()) >= 3, 60_000, 'ticks before the update');

    await writeFile(policyFile, JSON.stringify(webOnly()));
    process.kill(run.child.pid!, 'SIGHUP');
    // The cut is the flow.closed event; after it the server's segments are refused, which the audit shows as
    // denied ingress from port 7000. Once three of them have been refused, nothing more of that flow can be in flight.
    await waitFor(async () => (await run.audit()).some((e) => e.type === 'flow.closed' && e.dstPort === 7000), 60_000, 'the flow to be cut');
    const atCut = await count();
    const refused = async () => (await run.audit()).filter((e) => e.type === 'flow.opened' && e.verdict === 'denied' && e.srcPort === 7000).length;
    await waitFor(async () => (await refused()) >= 1, 60_000, 'a segment of the cut flow to be refused');
    expect(await count()).toBe(atCut);
    run.child.stdin!.end();
    await run.child;
    server.kill('SIGKILL');
    await server;
  });
});
