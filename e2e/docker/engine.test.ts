/**
 * --engine docker end to end: a locally imported agent image runs as a Docker container under the
 * lattice-runsc runtime, inside lattice's sandbox netns, so its only way out is the TypeScript
 * WireGuard peer (to a real wireguard-go peer in its own netns) under the policy, with audit.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pino } from 'pino';
import Docker from 'dockerode';
import { requireBinary, tempDir, busyboxRootfs, REPO } from '../support/env.js';
import { startWgPeer, genKeypair, waitFor, type WgPeer } from '../support/wgpeer.js';
import { ensureDockerd, type DockerdHandle } from '../image/dockerd.js';
import { runInDocker, reapDockerOrphans, buildCreateOptions, DockerLabel, DOCKER_NETNS_DIR, type DockerSandboxInfo } from '../../src/docker/engine.js';
import { wgSandboxNetwork } from '../../src/sandbox/network.js';
import { parseConfig } from '../../src/wg/config.js';
import { parsePolicy } from '../../src/policy/index.js';
import type { AuditEventDraft } from '../../src/audit/events.js';

const SANDBOX_PORT = 51997;
const SANDBOX_IP = '10.125.0.2';
const PEER_IP = '10.125.0.10';
const IMAGE = `ltdock-agent:${randomBytes(4).toString('hex')}`;
const ENTRY = '#!/bin/sh\necho "agent mode=$AGENT_MODE in $(pwd) uid=$(id -u)"\nexec "$@"\n';

let work: Awaited<ReturnType<typeof tempDir>>;
let dockerd: DockerdHandle | null = null;
let docker: Docker;
let peer: WgPeer;
let wgText: string;
let stateDir: string;
const log = pino({ level: 'warn' });

const GET = (port: number) => `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 4 ${PEER_IP} ${port}`;

function capture() {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (d: Buffer) => (stdout += d.toString()));
  err.on('data', (d: Buffer) => (stderr += d.toString()));
  return { stdio: { stdout: out, stderr: err }, text: () => ({ stdout, stderr }) };
}

async function ourContainers(label: string): Promise<string[]> {
  const r = await execa('docker', ['ps', '-a', '-q', '--filter', `label=${label}`]);
  return String(r.stdout).split('\n').filter(Boolean);
}

beforeAll(async () => {
  for (const bin of ['runsc', 'wireguard-go', 'wg', 'dockerd', 'docker']) await requireBinary(bin);
  work = await tempDir('ltdock-e2e');
  stateDir = join(work.path, 'state');
  dockerd = await ensureDockerd(join(work.path, 'dockerd.log'));
  docker = dockerd.docker;

  // The agent image: busybox rootfs + an entrypoint script, imported with its config.
  const rootfs = await busyboxRootfs(work.path);
  await mkdir(join(rootfs, 'app'));
  await writeFile(join(rootfs, 'app/entry.sh'), ENTRY);
  await chmod(join(rootfs, 'app/entry.sh'), 0o755);
  await execa('tar', ['-C', rootfs, '-cf', join(work.path, 'rootfs.tar'), '.']);
  await execa('docker', [
    'import',
    '--change', 'ENTRYPOINT ["/app/entry.sh"]',
    '--change', 'CMD ["sh", "-c", "echo default-cmd"]',
    '--change', 'ENV AGENT_MODE=docker PATH=/bin',
    '--change', 'WORKDIR /app',
    join(work.path, 'rootfs.tar'),
    IMAGE,
  ]);

  const keys = await genKeypair();
  peer = await startWgPeer({
    prefix: 'ltdock',
    dir: work.path,
    sandboxPublicKey: keys.publicKey,
    sandboxPort: SANDBOX_PORT,
    sandboxAllowedIPs: `${SANDBOX_IP}/32`,
    overlay: PEER_IP,
    hostAddr: '10.124.0.1',
    peerAddr: '10.124.0.2',
    httpPorts: [8080, 8081],
  });
  wgText =
    `[Interface]\nPrivateKey = ${keys.privateKey}\nAddress = ${SANDBOX_IP}/32\nListenPort = ${SANDBOX_PORT}\n\n` +
    `[Peer]\nPublicKey = ${peer.publicKey}\nAllowedIPs = 10.125.0.0/24\nEndpoint = ${peer.endpoint}\nPersistentKeepalive = 5\n`;
});

afterAll(async () => {
  await peer?.stop();
  if (dockerd) {
    for (const id of await ourContainers(`${DockerLabel.managed}=true`).catch(() => [])) {
      const labels = (await docker.getContainer(id).inspect().catch(() => undefined))?.Config.Labels ?? {};
      if (labels[DockerLabel.id]?.startsWith('ltdock-')) await execa('docker', ['rm', '-f', id], { reject: false });
    }
    await execa('docker', ['rmi', '-f', IMAGE], { reject: false });
    await dockerd.stop();
  }
  await work?.remove();
});

describe('runInDocker (dockerd + lattice-runsc + the sandbox network)', () => {
  it('runs in docker ps with runtime lattice-runsc and lattice labels; traffic goes through WireGuard under the policy, audited', async () => {
    const wg = parseConfig(wgText);
    const policy = parsePolicy(JSON.stringify({ version: 1, mode: 'enforce', egress: [{ id: 'web', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [8080], protocol: 'tcp' }] }));
    const audit: AuditEventDraft[] = [];
    const gate = join(work.path, 'gate');
    await mkdir(gate, { recursive: true });
    const io = capture();
    let info: DockerSandboxInfo | undefined;
    let seen: Promise<{ ps: string; runtime: string; labels: Record<string, string>; ip: string }> | undefined;

    const code = await runInDocker({
      stateDir,
      name: 'ltdock-web',
      image: IMAGE,
      // The container waits at the gate so the test can look at it while it runs.
      cmd: ['sh', '-c', `until [ -f /gate/open ]; do sleep 0.2; done; ip -4 addr; ${GET(8080)}; echo "allowed=$?"; ${GET(8081)}; echo "denied=$?"; echo oops >&2`],
      mounts: [{ destination: '/gate', type: 'bind', source: gate, options: ['rbind', 'ro'] }],
      network: wgSandboxNetwork({ iface: wg.interface, peers: wg.peers, policy, audit: (e) => audit.push(e), log }),
      stdio: { stdin: null, ...io.stdio },
      log,
      onStarted: (i) => {
        info = i;
        seen = (async () => {
          const ps = String((await execa('docker', ['ps', '--no-trunc', '--format', '{{.ID}} {{.Names}}'])).stdout);
          const runtime = String((await execa('docker', ['inspect', '--format', '{{.HostConfig.Runtime}}', i.containerId])).stdout).trim();
          const labels = JSON.parse(String((await execa('docker', ['inspect', '--format', '{{json .Config.Labels}}', i.containerId])).stdout)) as Record<string, string>;
          const ip = existsSync(join(DOCKER_NETNS_DIR, i.containerId)) ? 'mapped' : 'unmapped';
          await writeFile(join(gate, 'open'), '');
          return { ps, runtime, labels, ip };
        })();
      },
    });
    const s = await seen!;
    const { stdout, stderr } = io.text();
    expect(code, stderr).toBe(0);
    expect(s.ps).toContain(`${info!.containerId} ${info!.containerName}`);
    expect(s.runtime).toBe('lattice-runsc');
    expect(s.labels).toMatchObject({ [DockerLabel.id]: info!.id, [DockerLabel.name]: 'ltdock-web', [DockerLabel.managed]: 'true' });
    expect(s.ip).toBe('mapped');
    // Inside: the sandbox netns's TUN address (the wrapper joined our netns), the image's entrypoint/env/workdir.
    expect(stdout).toContain(`inet ${SANDBOX_IP}/32`);
    expect(stdout).toContain('agent mode=docker in /app uid=0');
    expect(stdout).toContain('hello from the peer');
    expect(stdout).toMatch(/allowed=0/);
    expect(stdout).toMatch(/denied=[1-9]/);
    expect(String(stdout.match(/hello from the peer/g))).toBe('hello from the peer');
    expect(stderr).toContain('oops');
    expect(stdout).not.toContain('oops');
    const opened = audit.filter((e) => e.type === 'flow.opened') as Array<Record<string, unknown>>;
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'allowed', ruleId: 'web', dstIp: PEER_IP, dstPort: 8080 }));
    expect(opened).toContainEqual(expect.objectContaining({ verdict: 'denied', ruleId: 'default-deny', dstIp: PEER_IP, dstPort: 8081 }));
    expect(audit).toContainEqual(expect.objectContaining({ type: 'flow.closed', dstPort: 8080 }));
    // Afterwards: no container, no mapping file, no netns, no record.
    expect(await ourContainers(`${DockerLabel.id}=${info!.id}`)).toEqual([]);
    expect(existsSync(join(DOCKER_NETNS_DIR, info!.containerId))).toBe(false);
    expect(String((await execa('ip', ['netns', 'list'])).stdout)).not.toContain(`lattice-${info!.id}`);
    expect(await readdir(join(stateDir, 'sandboxes')).catch(() => [])).toEqual([]);
  });

  it('passes stdin through, keeps stdout and stderr apart, returns the exit code; flags override the image', async () => {
    const io = capture();
    const code = await runInDocker({
      stateDir,
      image: IMAGE,
      entrypoint: '/bin/sh',
      cmd: ['-c', 'cat; echo "cwd=$(pwd) mode=$AGENT_MODE uid=$(id -u)"; echo to-stderr >&2; exit 7'],
      env: ['AGENT_MODE=override'],
      cwd: '/tmp',
      user: { uid: 1000, gid: 1000 },
      stdio: { stdin: Readable.from(['line one\n', 'line two\n']), ...io.stdio },
      log,
    });
    const { stdout, stderr } = io.text();
    expect(code).toBe(7);
    expect(stdout).toContain('line one\nline two\n');
    expect(stdout).toContain('cwd=/tmp mode=override uid=1000');
    expect(stdout).not.toContain('agent mode');
    expect(stderr).toContain('to-stderr');
  });

  it('the image defaults apply without overrides; the root filesystem is read-only, /tmp is writable, no network without a hook', async () => {
    const io = capture();
    const code = await runInDocker({ stateDir, image: IMAGE, stdio: { stdin: null, ...io.stdio }, log });
    expect(code).toBe(0);
    expect(io.text().stdout).toContain('agent mode=docker in /app uid=0');
    expect(io.text().stdout).toContain('default-cmd');

    const io2 = capture();
    const code2 = await runInDocker({
      stateDir,
      image: IMAGE,
      cmd: ['sh', '-c', 'touch /app/x 2>/dev/null && echo root-writable; touch /tmp/x && echo tmp-writable; ip -4 addr | grep -c inet'],
      stdio: { stdin: null, ...io2.stdio },
      log,
    });
    expect(code2).toBe(0);
    expect(io2.text().stdout).not.toContain('root-writable');
    expect(io2.text().stdout).toContain('tmp-writable');
    expect(io2.text().stdout.trim().split('\n').pop()).toBe('1'); // loopback only
  });

  it('SIGTERM to the launcher reaches the agent; its own exit code wins and the container is removed', async () => {
    // node itself runs the launcher (tsx as a loader), so the signal reaches runInDocker's process.
    const child = execa(process.execPath, ['--import', 'tsx', join(REPO, 'e2e/docker/fixtures/run-in-docker.ts'), stateDir, IMAGE,
      'sh', '-c', 'trap "echo got-term; exit 7" TERM; echo ready; while true; do sleep 0.2; done'], { reject: false, cwd: REPO, timeout: 60_000 });
    let err = '';
    let out = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(async () => /started [0-9a-f]{64}/.test(err) && out.includes('ready'), 60_000, 'container started');
    const containerId = /started ([0-9a-f]{64})/.exec(err)![1]!;
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode, err).toBe(7);
    expect(out).toContain('got-term');
    await expect(docker.getContainer(containerId).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  it('a missing image is a one-line usage error and leaves nothing behind', async () => {
    await expect(runInDocker({ stateDir, image: 'ltdock-absent:nope', stdio: { stdin: null }, log })).rejects.toThrow(/not in the local Docker engine/);
    expect(await readdir(join(stateDir, 'sandboxes')).catch(() => [])).toEqual([]);
  });

  it('reapDockerOrphans removes managed containers whose launcher is gone, and their mapping files; live ones stay', async () => {
    const dead = spawnSync('true');
    const mk = async (id: string, pid: number) => {
      const opts = buildCreateOptions({ id, name: id, image: IMAGE, cmd: ['sleep', '60'], stdin: false, launcher: { pid, startTicks: 1 } });
      return docker.createContainer({ ...opts, HostConfig: { ...opts.HostConfig, Runtime: 'runc' } });
    };
    const orphan = await mk('ltdock-orphan', dead.pid);
    const live = await mk('ltdock-live', process.pid);
    await mkdir(DOCKER_NETNS_DIR, { recursive: true });
    await writeFile(join(DOCKER_NETNS_DIR, orphan.id), '/var/run/netns/lattice-ltdock-orphan');
    try {
      const removed = await reapDockerOrphans((id) => id !== 'ltdock-orphan', { docker });
      expect(removed).toEqual(['ltdock-orphan']);
      await expect(orphan.inspect()).rejects.toMatchObject({ statusCode: 404 });
      expect((await live.inspect()).Id).toBe(live.id);
      expect(existsSync(join(DOCKER_NETNS_DIR, orphan.id))).toBe(false);
    } finally {
      await live.remove({ force: true }).catch(() => undefined);
      await orphan.remove({ force: true }).catch(() => undefined);
    }
  });
});
