/**
 * The CLI as a Unix tool (issue 22): stdio through the caller's descriptors, exit codes as `docker run`,
 * signals, usage errors. Each case is the shell input a user typed, run through a real shell and runsc.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice, CLI } from '../support/env.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;

/** Run a shell line with `lattice` defined as this build (own state dir), in the work dir. */
function sh(line: string) {
  const prelude = `lattice() { "${process.execPath}" "${CLI}" --state-dir "${stateDir}" "$@"; }; R="${rootfs}"; `;
  return execa('bash', ['-c', prelude + line], { cwd: work.path, reject: false });
}

beforeAll(async () => {
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-cli');
  rootfs = await busyboxRootfs(work.path);
  stateDir = join(work.path, 'state');
});

afterAll(async () => {
  await work?.remove();
});

describe('stdio goes through the caller\'s file descriptors', () => {
  it('`>` keeps what the shell wrote first (shared offset)', async () => {
    const r = await sh(`{ echo 'line written by the host shell first'; lattice sandbox run --rootfs "$R" -- echo SANDBOX; } > out.txt`);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await readFile(join(work.path, 'out.txt'), 'utf8')).toBe('line written by the host shell first\nSANDBOX\n');
  });

  it('`>>` appends, and `> log 2>&1` keeps stdout and stderr in order', async () => {
    await writeFile(join(work.path, 'app.log'), 'old line\n');
    const r = await sh(`lattice sandbox run --rootfs "$R" -- sh -c 'echo out1; echo err1 >&2; echo out2' >> app.log 2>&1`);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await readFile(join(work.path, 'app.log'), 'utf8')).toBe('old line\nout1\nerr1\nout2\n');
  });

  it('stdin from a file continues where the shell stopped reading', async () => {
    await writeFile(join(work.path, 'in.txt'), 'one\ntwo\nthree\n');
    const r = await sh(`{ read first; echo "host:$first"; lattice sandbox run --rootfs "$R" -- cat; } < in.txt`);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('host:one\ntwo\nthree');
  });
});

describe('exit codes follow docker run', () => {
  it.each([
    ['a command not found on PATH', ['nonexist'], 127, /^lattice: nonexist: command not found in the sandbox \(PATH /],
    ['a missing absolute path', ['/nonexist'], 127, /^lattice: \/nonexist: command not found in the sandbox/],
    ['a file that is not executable', ['/etc/passwd'], 126, /^lattice: \/etc\/passwd: cannot execute in the sandbox/],
  ])('%s %j exits %i with one line', async (_what, cmd, code, message) => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--', ...cmd]);
    expect(r.exitCode).toBe(code);
    const lines = String(r.stderr).trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(message);
  });

  it.each([
    [['sandbox', 'run', '--bogus'], /^lattice: unknown option '--bogus'/],
    [['sandbox', 'frob'], /^lattice: unknown command 'frob'/],
    [['frob'], /^lattice: unknown command 'frob'/],
    [['sandbox', 'run', '--rootfs', '/tmp', '--cap-add', 'CAP_FOO', '--', 'true'], /^lattice: --cap-add CAP_FOO is not a Linux capability; .*NET_RAW/],
    [['sandbox', 'run', '--rootfs', '/tmp', '--stop-timeout', 'soon', '--', 'true'], /^lattice: --stop-timeout soon is not a number of seconds/],
    [['sandbox', 'run', '--rootfs', '/tmp', '--dns-name', 'web.x.lattice=10.77.0.1', '--', 'true'], /^lattice: --dns-name applies to the WireGuard network: add --wg-config FILE/],
    [['sandbox', 'start', '--name', 'x', '--control-plane', 'http://127.0.0.1:8470', '--rootfs', '/tmp', '--', 'true'], /^lattice: --control-plane http:\/\/127\.0\.0\.1:8470 is the admin API's URL; .*nats:\/\/127\.0\.0\.1:4222/],
  ])('usage error %j exits 2 and changes nothing', async (args, message) => {
    const fresh = join(work.path, `bad-${Math.random().toString(16).slice(2)}`);
    const r = await lattice(fresh, args as string[]);
    expect(r.exitCode, String(r.stderr)).toBe(2);
    expect(String(r.stderr).split('\n')[0]).toMatch(message as RegExp);
    expect(await readdir(fresh).catch(() => [])).toEqual([]);
  });

  it('--policy without --wg-config runs with host egress, not a --network none complaint (item 6)', async () => {
    await writeFile(join(work.path, 'p.json'), JSON.stringify({ version: 1, egress: [{ id: 'none-really', action: 'deny', cidrs: ['10.0.0.0/8'] }] }));
    const r = await sh(`lattice sandbox run --policy p.json --rootfs "$R" -- echo ran`);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('ran');
    expect(String(r.stderr)).not.toContain('--network none');
  });

  it('--version prints the version and exits 0', async () => {
    const r = await lattice(stateDir, ['--version']);
    expect(r.exitCode).toBe(0);
    const pkg = JSON.parse(await readFile(join(CLI, '../../../package.json'), 'utf8')) as { version: string };
    expect(String(r.stdout).trim()).toBe(pkg.version);
  });
});

describe('signals', () => {
  async function startedRun(args: string[], script: string) {
    const child = lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, ...args, '--', 'sh', '-c', script]);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const check = () => (out.includes('ready') ? resolve() : undefined);
      child.stdout?.on('data', check);
      void child.then(() => reject(new Error(`exited before ready: ${out}`)));
    });
    return { child, output: () => out };
  }

  it('a process that traps SIGTERM and exits 7 makes lattice exit 7', async () => {
    const { child, output } = await startedRun([], 'trap "echo trapped; exit 7" TERM INT; echo ready; while true; do sleep 0.1; done');
    child.kill('SIGTERM');
    const r = await child;
    expect(output()).toContain('trapped');
    expect(r.exitCode).toBe(7);
  });

  it('one that ignores SIGTERM is killed after --stop-timeout: 137', async () => {
    const { child } = await startedRun(['--stop-timeout', '0.5'], 'trap "" TERM; echo ready; while true; do sleep 0.1; done');
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(137);
  });
});

describe('kept sandboxes can be removed', () => {
  it('gc leaves --keep alone; sandbox rm NAME removes it; an unknown name lists the choices', async () => {
    const st = join(work.path, 'state-keep');
    expect((await lattice(st, ['sandbox', 'run', '--keep', '--name', 'kept-one', '--rootfs', rootfs, '--', 'true'])).exitCode).toBe(0);
    // gc without --kept leaves it, and says so with its name (it is not "nothing").
    expect(String((await lattice(st, ['gc'])).stdout).trim()).toBe('nothing to remove; kept with --keep: kept-one (`lattice gc --kept` or `lattice sandbox rm NAME` removes it)');
    expect(JSON.parse(String((await lattice(st, ['gc', '--json'])).stdout))).toEqual({ removed: [] });
    const wrong = await lattice(st, ['sandbox', 'rm', 'kept-on']);
    expect(wrong.exitCode).toBe(2);
    expect(String(wrong.stderr).trim()).toMatch(/^lattice: no sandbox has id or name kept-on; sandboxes: lt-[0-9a-f]+ \(kept-one\)$/);
    const rm = await lattice(st, ['sandbox', 'rm', 'kept-one']);
    expect(rm.exitCode, String(rm.stderr)).toBe(0);
    expect(await readdir(join(st, 'sandboxes'))).toEqual([]);
    expect((await lattice(st, ['sandbox', 'run', '--keep', '--rootfs', rootfs, '--', 'true'])).exitCode).toBe(0);
    expect(String((await lattice(st, ['gc', '--kept'])).stdout)).toMatch(/^removed lt-/);
    expect(await readdir(join(st, 'sandboxes'))).toEqual([]);
  });
});

describe('image progress (issue 22 item 8)', () => {
  it('a tarball rootfs, unpacked then cached, prints no progress lines when stderr is piped or a terminal shows a cache hit', async () => {
    await execa('tar', ['-cf', join(work.path, 'rootfs.tar'), '-C', rootfs, '.']);
    for (const round of ['unpacked', 'cached']) {
      const r = await sh(`lattice sandbox run --rootfs rootfs.tar -- echo ${round} 2>err.txt`);
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(String(r.stdout)).toBe(round);
      expect(await readFile(join(work.path, 'err.txt'), 'utf8')).toBe('');
    }
    // On a pseudo-terminal (script(1)), the cache hit draws nothing either: no "cached: done 0.0 MB".
    const tty = await execa('script', ['-qec', `"${process.execPath}" "${CLI}" --state-dir "${stateDir}" sandbox run --rootfs rootfs.tar -- echo on-a-tty`, '/dev/null'], { cwd: work.path, reject: false });
    expect(tty.exitCode, String(tty.stderr)).toBe(0);
    expect(String(tty.stdout).replace(/\r/g, '').trim()).toBe('on-a-tty');
  });
});
