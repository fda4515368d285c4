import { execFileSync } from 'node:child_process';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxRootfs, lattice, requireBinary, tempDir } from '../support/env.js';

// --user NAME under gVisor: the uid/gid come from the rootfs's own /etc/passwd as a chroot sees it,
// never from a host file an absolute symlink points at, and a FIFO cannot hang the launcher.

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;
let hostPasswd: string;

beforeAll(async () => {
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-user');
  rootfs = await busyboxRootfs(work.path);
  stateDir = join(work.path, 'state');
  hostPasswd = join(work.path, 'host-passwd');
  await writeFile(hostPasswd, 'agent:x:4242:4343::/:/bin/sh\n');
});

afterAll(async () => {
  await work?.remove();
});

async function setPasswd(make: (p: string) => Promise<void>): Promise<void> {
  const p = join(rootfs, 'etc', 'passwd');
  await rm(p, { force: true, recursive: true });
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await make(p);
}

describe('--user resolved inside the rootfs (real runsc)', () => {
  it('a plain in-rootfs entry runs the agent as that uid:gid', async () => {
    await setPasswd((p) => writeFile(p, 'root:x:0:0::/root:/bin/sh\nagent:x:1000:1001::/:/bin/sh\n'));
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--user', 'agent', '--', 'sh', '-c', 'echo "$(id -u):$(id -g)"']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout).trim()).toBe('1000:1001');
  });

  it('an absolute symlink to a host file: the host ids are never used; "not listed", exit 2, nothing runs', async () => {
    await setPasswd((p) => symlink(hostPasswd, p));
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--user', 'agent', '--', 'sh', '-c', 'echo ran as $(id -u)']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stdout)).not.toContain('ran as');
    expect(String(r.stderr)).toContain('user "agent" is neither a number nor listed in the image\'s /etc/passwd');
    expect(String(r.stderr).trim().split('\n')).toHaveLength(1);
  });

  it('a symlink to a FIFO: answered at once ("not listed"), the launcher does not hang', async () => {
    execFileSync('mkfifo', [join(rootfs, 'etc', 'passwd-fifo')]);
    await setPasswd((p) => symlink('/etc/passwd-fifo', p));
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--user', 'agent', '--', 'true']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toContain('/etc/passwd is not a regular file');
  });
});
