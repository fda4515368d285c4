import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { execa } from 'execa';

/*
 * The sandbox's stdio, as any child process's: through the caller's file descriptors.
 *
 * gVisor imports a host fd that is a regular file with an offset of its own, starting at 0, and writes
 * with pwrite: `{ echo first; lattice sandbox run -- echo SANDBOX; } > out.txt` would overwrite
 * "first", and O_APPEND (`>>`) would be lost. So a seekable fd (regular file, block device) is not
 * handed to runsc: the sandbox gets a pipe, and the launcher copies the pipe to its own fd with
 * write(2), which uses (and advances) the offset shared with the shell and honours O_APPEND.
 * Terminals, pipes, sockets and /dev/null are handed over as they are (a TTY stays a TTY inside).
 * stdin from a regular file is copied the same way, so the sandbox reads from where the caller left it.
 *
 * `> log 2>&1`: when stdout and stderr are the same seekable file, the sandbox gets ONE pipe (a FIFO in
 * its state directory) as both, so its lines keep their order, as they would in the file directly.
 */

/** 'ignore' (stdin only): /dev/null, for a sandbox nobody is attached to (the daemon's). */
export type StdioMode = 'inherit' | 'pipe' | 'ignore';

/** 'pipe' when fd is seekable (a regular file or block device), else 'inherit'. */
export function stdioModeOf(fd: number, fstat: (fd: number) => { isFile(): boolean; isBlockDevice(): boolean } = fstatSync): StdioMode {
  try {
    const st = fstat(fd);
    return st.isFile() || st.isBlockDevice() ? 'pipe' : 'inherit';
  } catch {
    return 'inherit'; // closed fd: let runsc see what the caller gave
  }
}

export interface StdioPlan {
  stdin: StdioMode;
  stdout: StdioMode;
  /** stdout and stderr are one seekable file (`> log 2>&1`): one pipe carries both. */
  merged?: boolean;
}

type Stat = { isFile(): boolean; isBlockDevice(): boolean; dev: number; ino: number };

export function planStdio(fstat: (fd: number) => Stat = fstatSync): StdioPlan {
  const stdout = stdioModeOf(1, fstat);
  let merged = false;
  if (stdout === 'pipe') {
    try {
      const [o, e] = [fstat(1), fstat(2)];
      merged = o.dev === e.dev && o.ino === e.ino;
    } catch {
      merged = false;
    }
  }
  return { stdin: stdioModeOf(0, fstat), stdout, merged };
}

/**
 * A FIFO at `path` opened at both ends: `writeFd` for the child (as stdout and stderr), `reader` for us.
 * Close writeFd in the parent once the child has it, so `reader` ends when the child's copies close.
 */
export async function openMergedPipe(dir: string): Promise<{ writeFd: number; reader: Socket; closeWriter(): void }> {
  const path = join(dir, 'stdio.fifo');
  await execa('mkfifo', ['-m', '600', path]);
  const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFd = openSync(path, constants.O_WRONLY);
  const reader = new Socket({ fd: readFd, readable: true, writable: false });
  let closed = false;
  return {
    writeFd,
    reader,
    closeWriter: () => {
      if (!closed) closeSync(writeFd);
      closed = true;
    },
  };
}

/**
 * Copy `from` into `to` without ending `to`; resolves when `from` ended (all bytes written) or failed.
 * For the caller's stdout a SyncWriteStream (files): each chunk is on disk, in order, before the next.
 */
export function copyInto(from: Readable, to: Writable): Promise<void> {
  return new Promise((resolve) => {
    from.on('data', (chunk: Buffer) => {
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
    from.once('end', resolve);
    from.once('error', () => resolve());
    from.once('close', resolve);
  });
}

/** Feed the caller's stdin to the sandbox; the sandbox sees EOF when the caller's stdin ends. */
export function feedStdin(from: Readable, to: Writable): void {
  to.on('error', () => undefined); // the sandbox exited without reading everything: not our failure
  from.pipe(to);
}
