/**
 * Host egress for a static WireGuard sandbox (`sandbox run --wg-config --egress host`): overlay
 * addresses still go to the WireGuard peer (a real wireguard-go), every other destination the policy
 * allows leaves through the launcher's network; without --egress host those are refused fast.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice } from '../support/env.js';
import { startWgPeer, genKeypair, type WgPeer } from '../support/wgpeer.js';
import { egressTunName } from '../../src/egress/host.js';
import { startInternet, WEB, type Internet } from './internet.js';

const k = 1 + (randomBytes(1)[0]! % 200);
const SANDBOX_IP = `10.78.${k}.2`;
const PEER_IP = `10.78.${k}.10`;
const SANDBOX_PORT = 52000 + k;

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;
let net: Internet;
let peer: WgPeer;
let wgConf: string;
let policy: string;

interface AuditLine {
  type: string;
  verdict?: string;
  ruleId?: string;
  dstIp?: string;
  sandboxId?: string;
}

const GET = (host: string, port: number) => `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${host} ${port}`;

async function sandbox(extra: string[], script: string) {
  const auditLog = join(work.path, `audit-${Date.now()}-${Math.random().toString(16).slice(2)}.ndjson`);
  const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--wg-config', wgConf, '--policy', policy, '--audit-log', auditLog, ...extra, '--', 'sh', '-c', script], {
    timeout: 90_000,
  });
  const text = await readFile(auditLog, 'utf8').catch(() => '');
  return { ...r, audit: text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditLine) };
}

beforeAll(async () => {
  for (const bin of ['runsc', 'nft', 'wireguard-go', 'wg']) await requireBinary(bin);
  work = await tempDir('lt-e2e-wgegress');
  rootfs = await busyboxRootfs(work.path);
  stateDir = join(work.path, 'state');
  net = await startInternet();
  const keys = await genKeypair();
  peer = await startWgPeer({
    prefix: `ltwe${randomBytes(2).toString('hex')}`,
    dir: work.path,
    sandboxPublicKey: keys.publicKey,
    sandboxPort: SANDBOX_PORT,
    sandboxAllowedIPs: `${SANDBOX_IP}/32`,
    overlay: PEER_IP,
    hostAddr: `10.124.${k}.1`,
    peerAddr: `10.124.${k}.2`,
    httpPorts: [8080],
  });
  wgConf = join(work.path, 'wg.conf');
  await writeFile(
    wgConf,
    `[Interface]\nPrivateKey = ${keys.privateKey}\nAddress = ${SANDBOX_IP}/32\nListenPort = ${SANDBOX_PORT}\n\n` +
      `[Peer]\nPublicKey = ${peer.publicKey}\nAllowedIPs = ${PEER_IP}/32\nEndpoint = ${peer.endpoint}\n`,
    { mode: 0o600 },
  );
  policy = join(work.path, 'policy.json');
  await writeFile(
    policy,
    JSON.stringify({
      version: 1,
      egress: [
        { id: 'peer', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [8080], protocol: 'tcp' },
        { id: 'web', action: 'allow', cidrs: [`${WEB}/32`], ports: [443], protocol: 'tcp' },
      ],
    }),
  );
});

afterAll(async () => {
  await peer?.stop();
  await net?.stop();
  await work?.remove();
});

describe('host egress for a WireGuard sandbox', () => {
  it('with --egress host: the overlay peer over WireGuard and an internet address through the host, both allowed by the policy', async () => {
    const r = await sandbox(['--egress', 'host'], `${GET(PEER_IP, 8080)}; echo "peer=$?"; ${GET(WEB, 443)}; echo "web=$?"`);
    expect(r.stdout).toContain('hello from the peer');
    expect(r.stdout).toContain(`hello from ${WEB}`);
    const opened = r.audit.filter((e) => e.type === 'flow.opened');
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'allowed', ruleId: 'peer', dstIp: PEER_IP }));
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'allowed', ruleId: 'web', dstIp: WEB }));
    // Nothing of this sandbox is left on the host.
    const id = r.audit.find((e) => e.sandboxId)!.sandboxId!;
    expect(String((await execa('ip', ['-o', 'link', 'show'])).stdout)).not.toContain(egressTunName(id));
    expect(String((await execa('nft', ['list', 'tables'])).stdout)).not.toContain(`lattice_egress_${id.replace(/-/g, '_')}`);
    expect(String((await execa('ip', ['route', 'show', `${SANDBOX_IP}/32`])).stdout).trim()).toBe('');
  });

  it('without --egress host: the internet address is refused fast, the peer still works', async () => {
    const r = await sandbox([], `${GET(PEER_IP, 8080)}; echo "peer=$?"; ${GET(WEB, 443)}; echo "web=$?"`);
    expect(r.stdout).toContain('hello from the peer');
    expect(r.stdout).not.toContain(`hello from ${WEB}`);
    expect(r.stdout).toMatch(/web=[1-9]/);
    expect(String(r.stderr)).toMatch(/refused/i);
  });
});
