/**
 * The packet path under a bad network: a real sandbox (gVisor -> TUN -> pump -> TypeScript WireGuard -> UDP)
 * talks to a wireguard-go peer in its own netns, and every WireGuard datagram between them, both ways, crosses
 * a relay that delays, reorders, drops and duplicates them (netem's knobs, drawn from the test's seed; this
 * kernel has no sch_netem, so `tc qdisc ... netem` is not available: see e2e/support/udp-impair.ts).
 *
 *   launcher UDP :SANDBOX_PORT <-lo-> relay L | relay R <-veth-> wireguard-go in the peer netns
 *
 * Two TCP streams of seeded random bytes run at once, one each way; the test asserts that
 *   - every byte arrives, in order: sha256 and length of what arrived equal what was sent, at both ends;
 *   - no packet with a wrong IPv4/TCP checksum reaches a receiver: tcpdump on the receiving TUN (the sandbox's,
 *     what the launcher wrote for gVisor; the peer's, what wireguard-go wrote after decrypting the launcher's
 *     packets) and the peer kernel's checksum-error counters (/proc/net/snmp, /proc/net/netstat) before and after.
 * Once per UDP batching mode the launcher offers (LATTICE_UDP_OFFLOAD=off | mmsg | auto, auto being GSO where
 * the kernel has it). Loss only makes it slower: every wait is on an event, bounded by a generous safety net.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, requireRoot, tempDir, busyboxRootfs, lattice, REPO, waitFor, waitForListener } from '../support/env.js';
import { startWgPeer, genKeypair, type WgPeer } from '../support/wgpeer.js';
import { startCapture, checkCaptureFile } from '../support/pcap.js';
import { startUdpRelay, describeImpairment, type UdpImpairment } from '../support/udp-impair.js';
import { SandboxRegistry } from '../../src/sandbox/registry.js';
import { seededRandom } from '../../test/support/random.js';

/** Bytes per stream (each direction). */
const STREAM_BYTES = 4 << 20;
/** Each direction of the underlay: a 2 ms delay with 1 ms jitter, a quarter sent at once (reordered), 1% lost, 0.5% twice. */
const IMPAIR: UdpImpairment = { delayMs: 2, jitterMs: 1, reorderPct: 25, lossPct: 1, duplicatePct: 0.5 };
const UP_PORT = 7001;
const DOWN_PORT = 7002;
const SANDBOX_IP = '10.77.0.2';
const PEER_IP = '10.77.0.10';
/** Safety net for one mode (sandbox start, both streams, captures); never a window the behaviour must fit. */
const MODE_TIMEOUT_MS = 540_000;

// Unique per run: names in shared places (the root netns's links and addresses, /var/run/wireguard, the UDP port).
const SUFFIX = randomBytes(3).toString('hex');
const PREFIX = `ltnm${SUFFIX}`;
const UNDERLAY = `10.231.${randomBytes(1)[0]!}.${4 * (randomBytes(1)[0]! % 63)}`;
const at = (base: string, n: number) => base.replace(/\d+$/, (x) => String(Number(x) + n));
const SANDBOX_PORT = 40000 + (randomBytes(2).readUInt16BE(0) % 10000);

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let peer: WgPeer;
let sandboxKey: { privateKey: string; publicKey: string };
let policyFile: string;

/** The peer's end: a sink on UP_PORT that hashes what arrives, a source on DOWN_PORT that sends a file. */
const PEER_SERVER = `
import hashlib, socket, sys, threading
ip, down = sys.argv[1], sys.argv[2]
def listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(1)
    return s
up_s, down_s = listen(${UP_PORT}), listen(${DOWN_PORT})
def sink():
    c, _ = up_s.accept()
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        h.update(b)
        n += len(b)
    print('up %d %s' % (n, h.hexdigest()), flush=True)
    c.close()
def source():
    c, _ = down_s.accept()
    with open(down, 'rb') as f:
        c.sendall(f.read())
    c.shutdown(socket.SHUT_WR)
    while c.recv(1 << 16):
        pass
    c.close()
    print('down sent', flush=True)
ts = [threading.Thread(target=sink), threading.Thread(target=source)]
for t in ts:
    t.start()
for t in ts:
    t.join()
`;

/** Checksum-error counters of the kernel in `netns` (`Group:Field` -> value), from /proc/net/snmp and /proc/net/netstat. */
async function csumCounters(netns: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const file of ['/proc/net/snmp', '/proc/net/netstat']) {
    const lines = String((await execa('ip', ['netns', 'exec', netns, 'cat', file])).stdout).split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i]!.split(/\s+/);
      const values = lines[i + 1]!.split(/\s+/);
      const group = names[0]!.replace(/:$/, '');
      names.forEach((n, j) => {
        if (j > 0 && (/CsumErrors$/.test(n) || (group === 'Ip' && n === 'InHdrErrors'))) out[`${group}:${n}`] = Number(values[j]);
      });
    }
  }
  return out;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  requireRoot();
  for (const bin of ['runsc', 'wireguard-go', 'wg', 'gcc', 'python3', 'tcpdump']) await requireBinary(bin);
  work = await tempDir('lt-e2e-netem');
  rootfs = await busyboxRootfs(work.path);
  await execa('gcc', ['-static', '-O2', '-o', join(rootfs, 'bin', 'netem-xfer'), join(REPO, 'e2e/network/fixtures/netem-xfer.c')]);
  sandboxKey = await genKeypair();
  peer = await startWgPeer({
    prefix: PREFIX,
    dir: work.path,
    sandboxPublicKey: sandboxKey.publicKey,
    sandboxPort: SANDBOX_PORT,
    sandboxAllowedIPs: `${SANDBOX_IP}/32`,
    overlay: PEER_IP,
    hostAddr: at(UNDERLAY, 1),
    peerAddr: at(UNDERLAY, 2),
    httpPorts: [],
  });
  policyFile = join(work.path, 'policy.json');
  await writeFile(policyFile, JSON.stringify({
    version: 1, mode: 'enforce', ingress: [],
    egress: [{ id: 'streams', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [UP_PORT, DOWN_PORT], protocol: 'tcp' }],
  }));
}, 300_000);

afterAll(async () => {
  await peer?.stop(); // deletes the peer netns and the host's veth end
  await work?.remove();
});

describe(`TCP through lattice with ${describeImpairment(IMPAIR)} on the UDP underlay`, () => {
  // UDP batching off, batched, and with GSO where offered, each with the TUN's write coalescing (the default);
  // and the forced plain TUN (LATTICE_TUN_OFFLOAD=off) with batching.
  it.each([
    ['off', 'on'],
    ['mmsg', 'on'],
    ['auto', 'on'],
    ['mmsg', 'off'],
  ])('LATTICE_UDP_OFFLOAD=%s, TUN offload %s: both streams arrive whole and in order, no bad checksum reaches a receiver', async (offload, tunOffload) => {
    const rnd = seededRandom();
    const up = rnd.bytes(STREAM_BYTES);
    const down = rnd.bytes(STREAM_BYTES);
    // Not under /tmp: the sandbox mounts a fresh tmpfs there.
    await mkdir(join(rootfs, 'data'), { recursive: true });
    await writeFile(join(rootfs, 'data', 'up.bin'), up);
    const downFile = join(work.path, `down-${offload}-${tunOffload}.bin`);
    await writeFile(downFile, down);

    // The relay for this mode, seeded like the streams; both WireGuard ends point at it.
    const relay = await startUdpRelay({
      host: at(UNDERLAY, 1),
      left: { address: at(UNDERLAY, 1), port: SANDBOX_PORT },
      right: { address: at(UNDERLAY, 2), port: Number(peer.endpoint.split(':')[1]) },
      impair: IMPAIR,
      random: rnd.float,
    });
    await execa('ip', ['netns', 'exec', peer.netns, 'wg', 'set', `${PREFIX}wg`, 'peer', sandboxKey.publicKey, 'endpoint', `${at(UNDERLAY, 1)}:${relay.rightPort}`]);
    const wgConf = join(work.path, `wg-${offload}-${tunOffload}.conf`);
    await writeFile(
      wgConf,
      `[Interface]\nPrivateKey = ${sandboxKey.privateKey}\nAddress = ${SANDBOX_IP}/32\nListenPort = ${SANDBOX_PORT}\n\n` +
        `[Peer]\nPublicKey = ${peer.publicKey}\nAllowedIPs = 10.77.0.0/24\nEndpoint = ${at(UNDERLAY, 1)}:${relay.leftPort}\nPersistentKeepalive = 5\n`,
      { mode: 0o600 },
    );

    const server = peer.exec(['python3', '-c', PEER_SERVER, PEER_IP, downFile]);
    let serverOut = '';
    server.stdout?.on('data', (d: Buffer) => (serverOut += d.toString()));
    const name = `${PREFIX}${offload}-${tunOffload}`;
    const stateDir = join(work.path, 'state');
    let sandbox: ResultPromise | undefined;
    const captures: Array<Awaited<ReturnType<typeof startCapture>>> = [];
    try {
      await waitForListener(peer.netns, DOWN_PORT, MODE_TIMEOUT_MS);
      // The sandbox says "ready" once it runs (its network is up), then waits for the test's "go" and, after the
      // streams, for "done", so the captures can be stopped while its netns still exists.
      const script = 'echo ready; read go; ' +
        `netem-xfer send ${PEER_IP} ${UP_PORT} /data/up.bin & u=$!; netem-xfer recv ${PEER_IP} ${DOWN_PORT} /tmp/down.bin & d=$!; ` +
        'wait $u; echo "up=$?"; wait $d; echo "down=$?"; ' +
        'echo "downlen=$(wc -c < /tmp/down.bin) downsha=$(sha256sum < /tmp/down.bin | cut -d" " -f1)"; read done';
      sandbox = lattice(stateDir, [
        'sandbox', 'run', '--name', name, '--rootfs', rootfs, '--wg-config', wgConf, '--policy', policyFile,
        '--audit-log', join(work.path, `audit-${offload}-${tunOffload}.ndjson`), '--', 'sh', '-c', script,
      ], { env: { LATTICE_UDP_OFFLOAD: offload, LATTICE_TUN_OFFLOAD: tunOffload } });
      let out = '';
      sandbox.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      let sandboxDone = false;
      void sandbox.finally(() => (sandboxDone = true));
      await waitFor(() => {
        if (sandboxDone) throw new Error('the sandbox exited before it was ready');
        return out.includes('ready');
      }, MODE_TIMEOUT_MS, 'the sandbox to run');

      const netns = (await new SandboxRegistry(stateDir).list()).find((r) => r.name === name)?.netns;
      expect(netns, `the sandbox ${name} has a netns in its record`).toBeDefined();
      const links = JSON.parse(String((await execa('ip', ['-n', netns!, '-j', 'link', 'show'])).stdout)) as Array<{ ifname: string }>;
      const tun = links.find((l) => l.ifname !== 'lo')?.ifname;
      expect(tun, `the sandbox netns ${netns} has a TUN`).toBeDefined();
      const counters0 = await csumCounters(peer.netns);
      captures.push(await startCapture({ netns: netns!, iface: tun!, file: join(work.path, `sandbox-${offload}-${tunOffload}.pcap`), filter: `dst host ${SANDBOX_IP}` }));
      captures.push(await startCapture({ netns: peer.netns, iface: `${PREFIX}wg`, file: join(work.path, `peer-${offload}-${tunOffload}.pcap`), filter: `dst host ${PEER_IP}` }));

      sandbox.stdin!.write('go\n');
      await waitFor(() => {
        if (sandboxDone) throw new Error(`the sandbox exited early: ${out}`);
        return /downsha=/.test(out);
      }, MODE_TIMEOUT_MS, 'both streams to end');
      // A stream that failed in the sandbox (its netem-xfer's error is in the output) will not reach the peer.
      expect(out).toMatch(/^up=0$/m);
      expect(out).toMatch(/^down=0$/m);
      await waitFor(() => serverOut.includes('down sent') && /^up \d+ /m.test(serverOut), MODE_TIMEOUT_MS, 'the peer to report both streams');
      const [toSandbox, toPeer] = [await captures[0]!.stop(), await captures[1]!.stop()];
      captures.length = 0;
      const counters1 = await csumCounters(peer.netns);
      sandbox.stdin!.write('done\n');
      const r = await sandbox;

      // Every byte, in order, both ways.
      expect(/^up (\d+) (\S+)$/m.exec(serverOut)?.slice(1)).toEqual([String(STREAM_BYTES), sha256(up)]);
      expect(/downlen=\s*(\d+) downsha=(\S+)/.exec(out)?.slice(1)).toEqual([String(STREAM_BYTES), sha256(down)]);
      expect(r.exitCode, String(r.stderr).slice(-2000)).toBe(0);

      // No bad checksum at either receiver; the captures saw the whole streams (none lost to a full buffer).
      for (const [what, cap, file, dir] of [
        ['sandbox TUN (launcher -> gVisor)', toSandbox, `sandbox-${offload}-${tunOffload}.pcap`, down],
        ['peer TUN (wireguard-go -> peer kernel)', toPeer, `peer-${offload}-${tunOffload}.pcap`, up],
      ] as const) {
        expect(cap.dropped, `${what}: tcpdump lost packets: ${cap.stderr}`).toBe(0);
        const report = await checkCaptureFile(join(work.path, file));
        expect(report.bad, `${what}: ${report.badCount} of ${report.packets} packets with a wrong checksum`).toEqual([]);
        // Partial checksums only where the launcher writes coalesced segments (TUN offload): the stream hashes
        // above checked their bytes. wireguard-go writes complete packets.
        if (what.startsWith('peer') || tunOffload === 'off') expect(report.partial, `${what}: segments with a partial checksum`).toBe(0);
        else console.log(`${what}: ${report.partial} coalesced segment(s) with a partial checksum`);
        expect(report.tcpPayloadBytes, `${what}: TCP payload captured`).toBeGreaterThanOrEqual(dir.length);
      }
      expect(counters1, 'checksum-error counters of the peer kernel').toEqual(counters0);
      // The impairment happened (so the streams crossed it): losses, reorders, duplicates on the way.
      console.log(`LATTICE_UDP_OFFLOAD=${offload} TUN offload ${tunOffload}: relay ${JSON.stringify(relay.stats)}; captures: ${toSandbox.captured} packets to the sandbox, ${toPeer.captured} to the peer`);
      expect(relay.stats.dropped).toBeGreaterThan(0);
      expect(relay.stats.reordered).toBeGreaterThan(0);
    } finally {
      for (const c of captures) await c.stop().catch(() => undefined);
      if (sandbox && sandbox.exitCode === null) {
        sandbox.stdin?.end();
        sandbox.kill('SIGTERM');
        await sandbox;
      }
      server.kill('SIGKILL');
      await server;
      await relay.close();
    }
  }, MODE_TIMEOUT_MS + 60_000);
});
