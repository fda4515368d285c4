import { execFileSync } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readRootfsFile } from '../../src/image/rootfs-file.js';
import { resolveUser } from '../../src/sandbox/prepare.js';

// --user NAME is looked up in the rootfs's /etc/passwd and /etc/group as a chroot into the rootfs
// would see them: never in a host file, never blocking on a FIFO, never reading without bound.

let tmp: string;
let rootfs: string;
let hostPasswd: string;

beforeEach(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-userdb-'));
  rootfs = join(tmp, 'rootfs');
  await fsp.mkdir(join(rootfs, 'etc'), { recursive: true });
  // A "host" user database outside the rootfs: what the agent must never get its ids from.
  hostPasswd = join(tmp, 'host', 'passwd');
  await fsp.mkdir(join(tmp, 'host'));
  await fsp.writeFile(hostPasswd, 'agent:x:4242:4343::/home/agent:/bin/sh\n');
});

afterEach(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

const resolveErr = (spec: string) => resolveUser(spec, rootfs).then(() => undefined, (e: unknown) => e as { code: string; message: string });

describe('users and groups come from inside the rootfs only', () => {
  it('a plain /etc/passwd and /etc/group give the ids', async () => {
    await fsp.writeFile(join(rootfs, 'etc', 'passwd'), 'root:x:0:0::/root:/bin/sh\nagent:x:1000:1001::/home:/bin/sh\n');
    await fsp.writeFile(join(rootfs, 'etc', 'group'), 'root:x:0:\nstaff:x:50:\n');
    expect(await resolveUser('agent', rootfs)).toEqual({ uid: 1000, gid: 1001 });
    expect(await resolveUser('agent:staff', rootfs)).toEqual({ uid: 1000, gid: 50 });
    expect(await resolveUser('7:8', rootfs)).toEqual({ uid: 7, gid: 8 });
  });

  it('an absolute symlink to a host file is resolved inside the rootfs: the host file is never read', async () => {
    await fsp.symlink(hostPasswd, join(rootfs, 'etc', 'passwd'));
    const err = await resolveErr('agent');
    expect(err?.code).toBe('EUSAGE');
    expect(err?.message).toContain('user "agent" is neither a number nor listed in the image\'s /etc/passwd');
    // The same absolute path, inside the rootfs, is what a chroot would read.
    await fsp.mkdir(join(rootfs, tmp, 'host'), { recursive: true });
    await fsp.writeFile(join(rootfs, hostPasswd), 'agent:x:1000:1000::/:/bin/sh\n');
    expect(await resolveUser('agent', rootfs)).toEqual({ uid: 1000, gid: 1000 });
  });

  it("'..' in a relative link stops at the rootfs root, as in a chroot", async () => {
    await fsp.symlink('../../../../../../../../..' + hostPasswd, join(rootfs, 'etc', 'passwd'));
    expect((await resolveErr('agent'))?.message).toContain("nor listed in the image's /etc/passwd");
  });

  it('a symlinked parent directory pointing out of the rootfs is resolved inside it', async () => {
    await fsp.rm(join(rootfs, 'etc'), { recursive: true });
    await fsp.symlink(join(tmp, 'host'), join(rootfs, 'etc'));
    expect((await resolveErr('agent'))?.message).toContain("nor listed in the image's /etc/passwd");
  });

  it('a FIFO as /etc/passwd answers "user not listed" at once instead of blocking', async () => {
    execFileSync('mkfifo', [join(rootfs, 'etc', 'fifo')]);
    await fsp.symlink('/etc/fifo', join(rootfs, 'etc', 'passwd'));
    const err = await resolveErr('agent');
    expect(err?.message).toContain("nor listed in the image's /etc/passwd");
    expect(err?.message).toContain('/etc/passwd is not a regular file');
  });

  it('a directory, a symlink loop and an oversized file are "not listed"', async () => {
    await fsp.mkdir(join(rootfs, 'etc', 'passwd'));
    expect((await resolveErr('agent'))?.message).toContain('not a regular file');
    await fsp.rm(join(rootfs, 'etc', 'passwd'), { recursive: true });
    await fsp.symlink('passwd', join(rootfs, 'etc', 'passwd'));
    expect((await resolveErr('agent'))?.message).toContain('too many symlinks');
    await fsp.rm(join(rootfs, 'etc', 'passwd'));
    await fsp.writeFile(join(rootfs, 'etc', 'passwd'), `${'#'.repeat(5 << 20)}\nagent:x:1:1::/:/bin/sh\n`);
    expect((await resolveErr('agent'))?.message).toContain('larger than');
  });

  it('a group name found only in the host /etc/group is not listed', async () => {
    await fsp.writeFile(join(rootfs, 'etc', 'passwd'), 'agent:x:1000:1000::/:/bin/sh\n');
    await fsp.symlink('/etc/group', join(rootfs, 'etc', 'group')); // absolute: inside the rootfs, it is itself
    const err = await resolveErr('agent:root');
    expect(err?.message).toContain('is not listed in the image\'s /etc/group');
  });

  it('readRootfsFile reads a file through in-rootfs symlinks', async () => {
    await fsp.mkdir(join(rootfs, 'usr', 'lib'), { recursive: true });
    await fsp.writeFile(join(rootfs, 'usr', 'lib', 'os-release'), 'ID=test\n');
    await fsp.symlink('../usr/lib/os-release', join(rootfs, 'etc', 'os-release'));
    expect(await readRootfsFile(rootfs, '/etc/os-release', 1024)).toEqual({ text: 'ID=test\n' });
  });
});
