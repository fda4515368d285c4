/**
 * Issue 13 item 9 end to end: a handshake-initiation flood against the launcher's WireGuard device,
 * with the sandbox under gVisor and a real wireguard-go peer in its own netns.
 *
 * The flood comes from 64 addresses of the peer's netns (each its own socket), every message an
 * initiation with a valid MAC1 (made from the sandbox's public key, as anyone with the directory
 * can), random otherwise. While it runs:
 *   - the established session keeps carrying traffic: the sandbox's UDP echoes still come back;
 *   - a legitimate new handshake completes: the peer forgets its session (wg peer remove + add,
 *     with a persistent keepalive so wireguard-go initiates at once), so wireguard-go must handshake
 *     again with the device under load (with the cookie round trip), and the echoes come back over
 *     the new session.
 * No timing is asserted; figures are in bench/wg-flood.ts.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice, waitFor, REPO } from '../support/env.js';
import { startWgPeer, genKeypair, type WgPeer } from '../support/wgpeer.js';

const SANDBOX_PORT = 51996;
const SANDBOX_IP = '10.78.0.2';
const PEER_IP = '10.78.0.10';
const HOST_ADDR = '10.125.0.1';
const FLOOD_NET = '10.125.8'; // 64 flood sources: FLOOD_NET.1 .. FLOOD_NET.64, in the peer's netns
const PREFIX = `lhf${randomBytes(2).toString('hex')}`;

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let peer: WgPeer;
let keys: { privateKey: string; publicKey: string };
let wgConf: string;
let stateDir: string;

beforeAll(async () => {
  for (const bin of ['runsc', 'wireguard-go', 'wg', 'gcc', 'python3']) await requireBinary(bin);
  work = await tempDir('lt-e2e-hsflood');
  rootfs = await busyboxRootfs(work.path);
  await execa('gcc', ['-static', '-O2', '-o', join(rootfs, 'bin', 'bigudp'), join(REPO, 'e2e/network/fixtures/bigudp.c')]);
  stateDir = join(work.path, 'state');
  keys = await genKeypair();
  peer = await startWgPeer({
    prefix: PREFIX,
    dir: work.path,
    sandboxPublicKey: keys.publicKey,
    sandboxPort: SANDBOX_PORT,
    sandboxAllowedIPs: `${SANDBOX_IP}/32`,
    overlay: PEER_IP,
    hostAddr: HOST_ADDR,
    peerAddr: '10.125.0.2',
  });
  // The flood's source addresses, routed back through the veth (so the host accepts them and the
  // device's cookie replies go back to the flooder, which ignores them but counts them).
  for (let i = 1; i <= 64; i++) await execa('ip', ['-n', peer.netns, 'addr', 'add', `${FLOOD_NET}.${i}/32`, 'dev', `${PREFIX}-p`]);
  await execa('ip', ['route', 'add', `${FLOOD_NET}.0/24`, 'via', '10.125.0.2', 'dev', `${PREFIX}-h`]);
  wgConf = join(work.path, 'wg.conf');
  await writeFile(
    wgConf,
    `[Interface]\nPrivateKey = ${keys.privateKey}\nAddress = ${SANDBOX_IP}/32\nListenPort = ${SANDBOX_PORT}\n\n` +
      `[Peer]\nPublicKey = ${peer.publicKey}\nAllowedIPs = ${PEER_IP}/32\nEndpoint = ${peer.endpoint}\nPersistentKeepalive = 5\n`,
    { mode: 0o600 },
  );
}, 180_000);

afterAll(async () => {
  await peer?.stop(); // deletes the veth, and the flood route with it
  await work?.remove();
});

/**
 * The peer side, in the peer's netns: an echo server on PEER_IP:9997 that conducts the test.
 * After 5 echoes it starts the flooder (a child process) and waits for its first cookie reply (the
 * device is under load); after 10 echoes under flood it makes wireguard-go forget the session; once
 * wireguard-go reports a handshake newer than that and 5 more echoes came back, it answers "done"
 * (a 4-byte reply) and stops the flood. It prints one line per phase.
 */
function conductor(): string {
  const flooder = [
    'import socket, hashlib, os, base64, select, sys',
    `pub = base64.b64decode('${keys.publicKey}')`,
    "mac1key = hashlib.blake2s(b'mac1----' + pub).digest()",
    'def init():',
    '    m = bytearray(148); m[0] = 1',
    '    m[4:116] = os.urandom(112)',
    '    m[116:132] = hashlib.blake2s(bytes(m[:116]), key=mac1key, digest_size=16).digest()',
    '    return bytes(m)',
    'msgs = [init() for _ in range(256)]',
    'socks = []',
    'for i in range(1, 65):',
    '    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    `    s.bind(('${FLOOD_NET}.%d' % i, 0)); s.setblocking(False); socks.append(s)`,
    'sent = cookies = 0',
    'while True:',
    '    for s in socks:',
    '        try:',
    `            s.sendto(msgs[sent % 256], ('${HOST_ADDR}', ${SANDBOX_PORT})); sent += 1`,
    '        except BlockingIOError: pass',
    '    if sent % 4096 < 64:',
    '        r, _, _ = select.select(socks, [], [], 0)',
    '        for s in r:',
    '            while True:',
    '                try: d = s.recv(2048)',
    '                except BlockingIOError: break',
    '                if d[:1] == b"\\x03": cookies += 1',
    "        print('sent', sent, 'cookies', cookies, flush=True)",
  ].join('\n');
  return [
    'import socket, subprocess, sys, time, threading',
    `flooder = ${JSON.stringify(flooder)}`,
    `WG, SB = '${PREFIX}wg', '${keys.publicKey}'`,
    's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    `s.bind(('${PEER_IP}', 9997))`,
    "print('ready', flush=True)",
    'n, phase, flood, stats, readd_at, after = 0, 0, None, "", 0, 0',
    'def handshake_time():',
    "    out = subprocess.run(['wg', 'show', WG, 'latest-handshakes'], capture_output=True, text=True).stdout.split()",
    '    return int(out[1]) if len(out) > 1 else 0',
    'while True:',
    '    data, addr = s.recvfrom(65535)',
    '    n += 1',
    '    if phase == 0 and n >= 5:',
    '        flood = subprocess.Popen([sys.executable, "-c", flooder], stdout=subprocess.PIPE, text=True)',
    '        while True:',
    '            line = flood.stdout.readline()',
    '            if not line or " cookies 0" not in line: break',
    "        print('flooding', line.strip(), flush=True)",
    '        threading.Thread(target=lambda: [None for _ in flood.stdout], daemon=True).start()',
    '        phase, n = 1, 0',
    '    elif phase == 1 and n >= 10:',
    "        print('session survived', n, flush=True)",
    '        readd_at = int(time.time())',
    "        subprocess.run(['wg', 'set', WG, 'peer', SB, 'remove'], check=True)",
    `        subprocess.run(['wg', 'set', WG, 'peer', SB, 'allowed-ips', '${SANDBOX_IP}/32', 'endpoint', '${HOST_ADDR}:${SANDBOX_PORT}', 'persistent-keepalive', '1'], check=True)`,
    "        print('peer forgot the session', flush=True)",
    '        phase = 2',
    '    elif phase == 2 and handshake_time() >= readd_at:',
    '        after += 1',
    '        if after >= 5:',
    "            print('new handshake completed; echoes after it', after, flush=True)",
    '            flood.kill()',
    "            s.sendto(b'done', addr)",
    '            continue',
    "    s.sendto(b'e' * len(data), addr)",
  ].join('\n');
}

describe('issue 13 item 9 under gVisor: handshake flood from many sources', () => {
  it('the established session keeps round-tripping and a new handshake completes (with the cookie) while 64 sources flood valid-MAC1 initiations', async () => {
    const child = peer.exec(['python3', '-c', conductor()]);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(async () => out.includes('ready'), undefined, 'peer conductor ready');
      const policy = { version: 1, egress: [{ id: 'echo', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [9997], protocol: 'udp' }] };
      const policyFile = join(work.path, 'policy.json');
      await writeFile(policyFile, JSON.stringify(policy));
      // Echo until the conductor says done (a 4-byte reply); bounded so a failure ends the run.
      const script = `i=0; while [ $i -lt 200 ]; do r=$(bigudp ${PEER_IP} 9997 100); echo $r; [ "$r" = reply=4 ] && exit 0; i=$((i+1)); done; exit 1`;
      const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--wg-config', wgConf, '--policy', policyFile, '--', 'sh', '-c', script], {
        timeout: 600_000,
      });
      expect(out).toMatch(/flooding sent \d+ cookies [1-9]/); // the device was under load and answered with cookies
      expect(out).toContain('session survived 10');
      expect(out).toContain('peer forgot the session');
      expect(out).toContain('new handshake completed; echoes after it 5');
      expect(r.exitCode, `${String(r.stdout)}\n${String(r.stderr)}\n${out}`).toBe(0);
      expect(String(r.stdout)).toContain('reply=4');
    } finally {
      child.kill('SIGKILL');
      await child;
    }
  }, 700_000);
});
