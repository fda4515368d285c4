import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { readdir, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { release } from 'node:os';
import { requireBinary, tempDir, busyboxRootfs, lattice, waitFor } from '../support/env.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;

async function ourContainers(): Promise<string[]> {
  const r = await execa('runsc', ['--root', join(stateDir, 'runsc'), 'list', '-quiet'], { reject: false });
  return String(r.stdout).split('\n').filter(Boolean);
}

beforeAll(async () => {
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-run');
  rootfs = await busyboxRootfs(work.path);
  stateDir = join(work.path, 'state');
});

afterAll(async () => {
  await work?.remove();
});

describe('lattice sandbox run (real runsc)', () => {
  it('runs the command under gVisor: uname -r is gVisor\'s kernel, not the host\'s', async () => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--', 'uname', '-r']);
    expect(r.exitCode).toBe(0);
    const reported = String(r.stdout).trim();
    expect(reported).toMatch(/^\d+\.\d+\.\d+/);
    expect(reported).not.toBe(release());
  });

  it('passes the exit code through', async () => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--', 'sh', '-c', 'exit 7']);
    expect(r.exitCode).toBe(7);
  });

  it('passes stdin, env and cwd through', async () => {
    const r = await lattice(
      stateDir,
      ['sandbox', 'run', '--rootfs', rootfs, '--env', 'GREETING=hi', '--cwd', '/tmp', '--', 'sh', '-c', 'read line; echo "$GREETING $line $(pwd)"'],
      { input: 'from-stdin\n' },
    );
    expect(r.exitCode).toBe(0);
    expect(String(r.stdout).trim()).toBe('hi from-stdin /tmp');
  });

  it('keeps the rootfs read-only with a writable /tmp, and grants no capabilities by default', async () => {
    const r = await lattice(stateDir, [
      'sandbox', 'run', '--rootfs', rootfs, '--',
      'sh', '-c', 'touch /x 2>/dev/null && echo rootfs-writable; touch /tmp/y && echo tmp-ok; grep CapEff /proc/self/status',
    ]);
    expect(String(r.stdout)).not.toContain('rootfs-writable');
    expect(String(r.stdout)).toContain('tmp-ok');
    expect(String(r.stdout)).toMatch(/CapEff:\s+0+\s*$/m);
  });

  it('stops the sandbox on SIGTERM and leaves no container behind', async () => {
    const child = lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--', 'sleep', '3600']);
    await waitFor(async () => (await ourContainers()).length === 1, 60_000, 'the sandbox container');
    const sentAt = Date.now();
    child.kill('SIGTERM');
    const r = await child;
    const tookMs = Date.now() - sentAt;
    console.log(`SIGTERM -> lattice exit: ${tookMs} ms`);
    expect(r.exitCode).toBe(143);
    expect(await ourContainers()).toEqual([]);
  });

  it('removes what a launcher killed with -9 left behind on the next sandbox ls', async () => {
    const child = lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--', 'sleep', '3600']);
    await waitFor(async () => (await ourContainers()).length === 1, 60_000, 'the sandbox container');
    child.kill('SIGKILL');
    // Not `await child`: the orphaned runsc keeps the stdio pipes open until it is reaped.
    await waitFor(async () => !isAlive(child.pid!), 60_000, 'the launcher to exit');
    expect((await ourContainers()).length).toBe(1); // the orphan is there
    const ls = await lattice(stateDir, ['sandbox', 'ls', '--json']);
    expect(ls.exitCode).toBe(0);
    expect(JSON.parse(String(ls.stdout))).toEqual([]);
    expect(await ourContainers()).toEqual([]);
    expect(await readdir(join(stateDir, 'sandboxes'))).toEqual([]);
    await child.catch(() => undefined);
  });

  it('lists a running sandbox with its name', async () => {
    const child = lattice(stateDir, ['sandbox', 'run', '--name', 'lister', '--rootfs', rootfs, '--', 'sleep', '3600']);
    await waitFor(async () => (await ourContainers()).length === 1, 60_000, 'the sandbox container');
    const ls = await lattice(stateDir, ['sandbox', 'ls', '--json']);
    const rows = JSON.parse(String(ls.stdout)) as Array<{ name: string; status: string }>;
    expect(rows).toEqual([expect.objectContaining({ name: 'lister', status: 'running' })]);
    child.kill('SIGTERM');
    await child;
  });

  it('keeps the bundle with --keep and writes a schema-valid config.json', async () => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--keep', '--name', 'kept', '--rootfs', rootfs, '--', 'true']);
    expect(r.exitCode).toBe(0);
    const ls = JSON.parse(String((await lattice(stateDir, ['sandbox', 'ls', '--json'])).stdout)) as Array<{ id: string; status: string }>;
    expect(ls).toEqual([expect.objectContaining({ status: 'exited (0)' })]);
    const files = await readdir(join(stateDir, 'sandboxes', ls[0]!.id, 'bundle'));
    expect(files).toContain('config.json');
  });
});

describe('bad input: one line, non-zero exit, nothing created', () => {
  it.each([
    [['sandbox', 'run', '--', 'true'], /say what to run: --rootfs/],
    [['sandbox', 'run', '--rootfs', '/definitely/not/here', '--', 'true'], /does not exist/],
    [['sandbox', 'run', '--rootfs', '/etc/hostname', '--', 'true'], /neither a directory nor/],
    [['sandbox', 'run', '--rootfs', '/tmp'], /no command to run/],
    [['sandbox', 'run', '--rootfs', '/tmp', '--env', 'NOEQUALS', '--', 'true'], /not KEY=VALUE/],
  ])('%j', async (args, message) => {
    const fresh = join(work.path, `bad-${Math.random().toString(16).slice(2)}`);
    const r = await lattice(fresh, args as string[]);
    expect(r.exitCode).toBe(2);
    const lines = String(r.stderr).trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(message as RegExp);
    expect(await readdir(fresh).catch(() => [])).toEqual([]);
  });

  it('a command that does not exist in the rootfs exits 127 with one line naming it', async () => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--', '/no/such/binary']);
    expect(r.exitCode).toBe(127);
    expect(String(r.stderr).trim().split('\n')).toEqual([expect.stringMatching(/^lattice: \/no\/such\/binary: command not found in the sandbox/)]);
  });

  it('a missing runsc is reported with the fix', async () => {
    const bin = join(work.path, 'empty-bin');
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, 'placeholder'), '');
    const r = await lattice(join(work.path, 'state-norunsc'), ['sandbox', 'run', '--rootfs', rootfs, '--', 'true'], {
      env: { PATH: bin },
      extendEnv: false,
    });
    expect(r.exitCode).toBe(125);
    expect(String(r.stderr).trim()).toMatch(/^lattice: runsc not found .*install it with/);
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
