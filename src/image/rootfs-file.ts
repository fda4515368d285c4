import { constants as C } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Reading a small file of a rootfs (e.g. /etc/passwd) the way a process chrooted into it would see
 * it, without ever leaving it:
 *  - the path is walked one component at a time with lstat; a symlink is read and resolved inside
 *    the rootfs (an absolute target restarts at the rootfs root, '..' never climbs above it), at
 *    most MAX_LINKS links (Linux's ELOOP limit is 40);
 *  - the file found must be a regular file no larger than `maxBytes`; it is opened with O_NOFOLLOW
 *    and O_NONBLOCK (a FIFO swapped in after the check cannot block us) and checked again by fstat.
 * Anything else (missing, a directory, a FIFO, a device, too large, a loop) is an answer, not an
 * exception: `{ missing: reason }`.
 */
export type RootfsFileResult = { text: string } | { missing: string };

const MAX_LINKS = 40;

export async function readRootfsFile(rootfs: string, path: string, maxBytes: number): Promise<RootfsFileResult> {
  const todo = path.split('/').filter((c) => c !== '' && c !== '.');
  const at: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const c = todo.shift() as string;
    if (c === '..') {
      at.pop();
      continue;
    }
    const host = join(rootfs, ...at, c);
    const st = await fsp.lstat(host).catch(() => null);
    if (st === null) return { missing: `${path} does not exist in the rootfs` };
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) return { missing: `${path}: too many symlinks` };
      const target = await fsp.readlink(host);
      if (target.startsWith('/')) at.length = 0;
      todo.unshift(...target.split('/').filter((x) => x !== '' && x !== '.'));
      continue;
    }
    if (todo.length > 0 && !st.isDirectory()) return { missing: `${path}: /${[...at, c].join('/')} is not a directory` };
    at.push(c);
  }
  const host = join(rootfs, ...at);
  const st = await fsp.lstat(host).catch(() => null);
  if (st === null || !st.isFile()) return { missing: `${path} is not a regular file in the rootfs` };
  if (st.size > maxBytes) return { missing: `${path} is larger than ${maxBytes} bytes` };
  const fh = await fsp.open(host, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK).catch(() => null);
  if (fh === null) return { missing: `${path} cannot be opened` };
  try {
    const s = await fh.stat();
    if (!s.isFile() || s.size > maxBytes) return { missing: `${path} is not a regular file of at most ${maxBytes} bytes` };
    const buf = Buffer.alloc(Math.min(s.size, maxBytes) + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > maxBytes) return { missing: `${path} is larger than ${maxBytes} bytes` };
    return { text: buf.subarray(0, n).toString('utf8') };
  } finally {
    await fh.close();
  }
}
