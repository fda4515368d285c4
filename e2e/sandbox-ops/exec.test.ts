/**
 * `lattice sandbox exec` against a sandbox started by a foreground `sandbox run`: exit status, stdio,
 * SIGTERM and a TTY as `run` gives them (issue 19 item 3), with real runsc.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CLI, busyboxRootfs, lattice, requireBinary, requireRoot, tempDir } from '../support/env.js';
import { startBox, type Box } from './helpers.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let stateDir: string;
let box: Box;
const name = `ops-exec-${randomBytes(3).toString('hex')}`;

beforeAll(async () => {
  requireRoot();
  await requireBinary('runsc');
  await requireBinary('script');
  work = await tempDir('lt-e2e-exec');
  stateDir = join(work.path, 'state');
  box = await startBox(stateDir, await busyboxRootfs(work.path), name);
});

afterAll(async () => {
  await box?.stop();
  await work?.remove();
});

/** A started `sandbox exec` whose stdout said "ready". */
async function started(script: string, args: string[] = []) {
  const child = lattice(stateDir, ['sandbox', 'exec', ...args, name, '--', 'sh', '-c', script]);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    void child.then((r) => reject(new Error(`exited before ready: ${out} ${String(r.stderr)}`)));
  });
  return { child, output: () => out };
}

describe('sandbox exec', () => {
  it('passes the exit status, stdout and stderr apart', async () => {
    const r = await lattice(stateDir, ['sandbox', 'exec', name, '--', 'sh', '-c', 'echo to-out; echo to-err >&2; exit 3']);
    expect(r.exitCode).toBe(3);
    expect(String(r.stdout)).toBe('to-out');
    expect(String(r.stderr)).toBe('to-err');
  });

  it('sees the running sandbox (its counter), with --user, --cwd and --env', async () => {
    expect(await box.count()).toBeGreaterThan(0);
    const r = await lattice(stateDir, ['sandbox', 'exec', '--user', 'agent', '--cwd', '/tmp', '--env', 'GREETING=hi', name, '--', 'sh', '-c', 'id -u; pwd; echo $GREETING']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout).split('\n')).toEqual(['1000', '/tmp', 'hi']);
  });

  it('-i passes stdin; without -i the command reads /dev/null', async () => {
    const input = 'line one\nline two\n';
    const withI = await lattice(stateDir, ['sandbox', 'exec', '-i', name, '--', 'cat'], { input });
    expect(withI.exitCode).toBe(0);
    expect(String(withI.stdout)).toBe('line one\nline two');
    const without = await lattice(stateDir, ['sandbox', 'exec', name, '--', 'cat'], { input });
    expect(without.exitCode).toBe(0);
    expect(String(without.stdout)).toBe('');
  });

  it('a command that is not there exits 127 with one line; an unknown sandbox is refused', async () => {
    const r = await lattice(stateDir, ['sandbox', 'exec', name, '--', 'nonexist']);
    expect(r.exitCode).toBe(127);
    expect(String(r.stderr).trim()).toMatch(/^lattice: nonexist: command not found in the sandbox/);
    const unknown = await lattice(stateDir, ['sandbox', 'exec', `${name}-nope`, '--', 'true']);
    expect(unknown.exitCode).not.toBe(0);
    expect(String(unknown.stderr).trim()).toBe(`lattice: no running sandbox has id or name ${name}-nope; see lattice sandbox ls`);
  });

  it('SIGTERM reaches the process in the sandbox: it traps it and exits 5', async () => {
    const { child, output } = await started('trap "echo trapped; exit 5" TERM; echo ready; while true; do sleep 0.1; done');
    child.kill('SIGTERM');
    const r = await child;
    expect(output()).toContain('trapped');
    expect(r.exitCode).toBe(5);
  });

  it('a process that ignores SIGTERM is killed after --stop-timeout (137) and is gone from the sandbox', async () => {
    const { child } = await started('trap "" TERM; echo ready; exec sleep 1000', ['--stop-timeout', '0.5']);
    child.kill('SIGTERM');
    expect((await child).exitCode).toBe(137);
    const ps = await lattice(stateDir, ['sandbox', 'exec', name, '--', 'ps']);
    expect(String(ps.stdout)).not.toContain('sleep 1000');
  });

  it('-t gives the command the caller\'s terminal (script(1)); without -t stdin is no terminal', async () => {
    const line = (flags: string) =>
      `"${process.execPath}" "${CLI}" --state-dir "${stateDir}" sandbox exec ${flags} ${name} -- sh -c '[ -t 0 ] && [ -t 1 ] && echo on-a-tty || echo no-tty'`;
    const tty = await execa('script', ['-qec', line('-t'), '/dev/null'], { reject: false });
    expect(tty.exitCode, String(tty.stdout)).toBe(0);
    expect(String(tty.stdout)).toContain('on-a-tty');
    const plain = await execa('script', ['-qec', line(''), '/dev/null'], { reject: false });
    expect(String(plain.stdout)).toContain('no-tty');
    const refused = await lattice(stateDir, ['sandbox', 'exec', '-t', name, '--', 'true'], { input: '' });
    expect(refused.exitCode).toBe(2);
    expect(String(refused.stderr).trim()).toMatch(/^lattice: sandbox exec -t needs a terminal on stdin/);
  });
});
