/**
 * `lattice sandbox checkpoint NAME --to DIR` / `sandbox restore DIR` (issue 19 item 4), real runsc and a real
 * control plane: an enrolled sandbox counts in memory and serves its count over the overlay; it is
 * checkpointed (the original stops and its launcher exits), then restored from the directory. The restored
 * one continues from its count (same boot marker in its tmpfs, count not below the last one served) and a peer
 * reaches it again on the same overlay address with the same WireGuard key. Bad input: one line, nothing done.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ResultPromise } from 'execa';
import { busyboxRootfs, lattice, requireBinary, requireRoot, tempDir, waitFor } from '../support/env.js';
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from '../support/control-plane.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let cp: EmbeddedControlPlane | undefined;
const running: ResultPromise[] = [];

const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [{ id: 'web', action: 'allow', cidrs: ['10.77.0.0/16', 'fd77::/48'], ports: [8080], protocol: 'tcp' }],
  ingress: [{ id: 'web-in', action: 'allow', cidrs: ['10.77.0.0/16', 'fd77::/48'], ports: [8080], protocol: 'tcp' }],
};

/** Counts in memory (a shell variable), mirrored to /tmp/w/c for httpd; /tmp/w/boot marks this boot. */
// `;`, not `&&`: in `a && b && (loop) & httpd` the `&` backgrounds the whole and-list, so httpd raced mkdir.
const WEB = 'mkdir -p /tmp/w; echo "$RANDOM$RANDOM$RANDOM" > /tmp/w/boot; (i=0; while true; do i=$((i+1)); echo $i > /tmp/w/c; sleep 0.1; done) & exec httpd -f -p 8080 -h /tmp/w';

const state = (name: string) => join(work.path, `state-${name}`);

function start(name: string, args: string[], cmd: string): { child: ResultPromise; out: () => string; err: () => string; idle: () => number } {
  const child = lattice(state(name), ['sandbox', 'start', '--name', name, '--rootfs', rootfs, ...args, '--', 'sh', '-c', cmd]);
  running.push(child);
  let out = '';
  let err = '';
  let idle = 0;
  child.stdout?.on('data', (d: Buffer) => {
    out = (out + d.toString()).slice(-8192);
    idle += (d.toString().match(/idle/g) ?? []).length;
  });
  child.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8192)));
  return { child, out: () => out, err: () => err, idle: () => idle };
}

async function credentials(name: string): Promise<{ publicKey: string; address: { ipv4: string } }> {
  return JSON.parse(await readFile(join(state(name), 'credentials', `${name}.json`), 'utf8')) as never;
}

/** `cat FILE` in the sandbox named `name` through `sandbox exec`. */
async function cat(name: string, file: string): Promise<string> {
  const r = await lattice(state(name), ['sandbox', 'exec', name, '--', 'cat', file]);
  if (r.exitCode !== 0) throw new Error(`sandbox exec ${name} cat ${file}: exit ${r.exitCode}: ${String(r.stderr)}`);
  return String(r.stdout).trim();
}

/** The last count the peer's loop fetched over the overlay (it prints got=N per request). */
const lastGot = (out: string) => Number([...out.matchAll(/^got=(\d+)$/gm)].at(-1)?.[1] ?? 0);

beforeAll(async () => {
  requireRoot();
  for (const bin of ['runsc', 'nats-server', 'gcc']) await requireBinary(bin);
  work = await tempDir('lt-e2e-ckpt');
  rootfs = await busyboxRootfs(work.path);
  cp = await startEmbeddedControlPlane(join(work.path, 'cp'));
});

afterAll(async () => {
  for (const c of running) c.kill('SIGTERM');
  await Promise.allSettled(running);
  await cp?.stop();
  await work?.remove();
});

describe('sandbox checkpoint / restore (enrolled, real runsc)', () => {
  it('the restored sandbox continues its count and answers a peer on the same overlay address', async () => {
    const policy = join(work.path, 'policy.json');
    await writeFile(policy, JSON.stringify(POLICY));
    const tk = await lattice(join(work.path, 'cp'), ['token', 'create', '--namespace', 'ck', '--limit', '2', '--policy', policy, '--api', cp!.api]);
    expect(tk.exitCode, String(tk.stderr)).toBe(0);
    const token = String(tk.stdout).trim();

    const web = start('web', ['--control-plane', cp!.natsUrl, '--token', token], WEB);
    await waitFor(() => web.err().includes('enrolled'), 60_000, 'web enrolled');
    const before = await credentials('web');
    const addr = before.address.ipv4;
    await waitFor(async () => Number(await cat('web', '/tmp/w/c').catch(() => '0')) > 0, 60_000, 'web counting');
    const boot = await cat('web', '/tmp/w/boot');

    // The peer fetches the count while /tmp/go exists, and says "idle" once per pass while it does not. runsc
    // cannot checkpoint a sandbox holding a TCP connection (TIME_WAIT included, 60 s), and a refused checkpoint
    // ends the sandbox: the peer polls only once the sandbox is restored.
    const peer = start(
      'peer',
      ['--control-plane', cp!.natsUrl, '--token', token],
      `while true; do if [ -f /tmp/go ]; then r=$(printf 'GET /c HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${addr} 8080 | tail -n 1); echo "got=$r"; else echo idle; fi; sleep 0.2; done`,
    );
    await waitFor(() => peer.idle() > 0, 90_000, 'the peer running');
    const polling = async (on: boolean) => {
      const r = await lattice(state('peer'), ['sandbox', 'exec', 'peer', '--', on ? 'touch' : 'rm', '-f', '/tmp/go']);
      expect(r.exitCode, String(r.stderr)).toBe(0);
    };

    // Bad input: one line each, nothing written, the sandbox keeps running.
    const nonEmpty = join(work.path, 'full');
    await mkdir(nonEmpty);
    await writeFile(join(nonEmpty, 'x'), 'x');
    for (const [args, msg] of [
      [['web', '--to', nonEmpty], /--to .*full is not empty; give a new or empty directory/],
      [['web', '--to', join(work.path, 'no', 'such', 'dir')], /is not a directory; create it first/],
      [['nosuch', '--to', join(work.path, 'ck-x')], /no running sandbox has id or name nosuch/],
    ] as const) {
      const r = await lattice(state('web'), ['sandbox', 'checkpoint', ...args]);
      expect(r.exitCode).not.toBe(0);
      expect(String(r.stderr).trim().split('\n')).toEqual([expect.stringMatching(msg)]);
    }
    expect(await readdir(nonEmpty)).toEqual(['x']);
    const notCk = await lattice(state('web'), ['sandbox', 'restore', nonEmpty]);
    expect(notCk.exitCode).not.toBe(0);
    expect(String(notCk.stderr).trim().split('\n')).toEqual([expect.stringMatching(/is not a lattice checkpoint \(no lattice-checkpoint\.json\)/)]);

    const dir = join(work.path, 'ck');
    const served = Number(await cat('web', '/tmp/w/c'));
    const ck = await lattice(state('web'), ['sandbox', 'checkpoint', 'web', '--to', dir]);
    expect(ck.exitCode, String(ck.stderr)).toBe(0);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    // The original is gone: its launcher exited, and no sandbox runs under that name.
    await web.child;
    const ls = await lattice(state('web'), ['sandbox', 'ls', '--json']);
    expect(JSON.parse(String(ls.stdout))).toEqual([]);

    const restored = lattice(state('web'), ['sandbox', 'restore', dir]);
    running.push(restored);
    let rerr = '';
    restored.stderr?.on('data', (d: Buffer) => (rerr += d.toString()));
    let restoredExit: string | undefined;
    void restored.then((r) => (restoredExit = `exit ${r.exitCode}: ${rerr}`));
    let first = 0;
    await waitFor(async () => {
      if (restoredExit) throw new Error(`sandbox restore ended: ${restoredExit}`);
      first = Number(await cat('web', '/tmp/w/c').catch(() => '0'));
      return first > 0;
    }, 90_000, 'the restored sandbox answering exec');
    // Same memory: the boot marker of the original, and the count goes on from where it was served last.
    expect(await cat('web', '/tmp/w/boot')).toBe(boot);
    expect(first).toBeGreaterThanOrEqual(served);
    await waitFor(async () => Number(await cat('web', '/tmp/w/c')) > first, 60_000, 'the restored count advancing');
    // Same identity and address; the peer, still pointed at that address, gets counts the original never reached.
    const after = await credentials('web');
    expect(after.publicKey).toBe(before.publicKey);
    expect(after.address.ipv4).toBe(addr);
    expect(JSON.parse(String((await lattice(state('web'), ['sandbox', 'ls', '--json'])).stdout))).toEqual([expect.objectContaining({ name: 'web', status: 'running', address: expect.stringContaining(addr) })]);
    await polling(true);
    await waitFor(() => lastGot(peer.out()) > first, 120_000, `the peer reaching the restored sandbox at ${addr} (last got=${lastGot(peer.out())}, restored at ${first})`);

    // Stopped, the restored sandbox leaves no host cgroup (runsc restore, unlike runsc run, does not remove it).
    const [{ id }] = JSON.parse(String((await lattice(state('web'), ['sandbox', 'ls', '--json'])).stdout)) as { id: string }[];
    expect(await readdir('/sys/fs/cgroup/memory/lattice')).toContain(id);
    restored.kill('SIGTERM');
    await restored;
    expect(await readdir('/sys/fs/cgroup/memory/lattice').catch(() => [] as string[])).not.toContain(id);

  }, 600_000);
});
