/**
 * A pseudo-terminal for an exec with a TTY through the daemon: runsc gives the process a terminal exactly
 * when its stdin is one, so the daemon opens a pty pair (posix_openpt, grantpt, unlockpt, ptsname_r from
 * libc through koffi: Node has no openpty), hands the slave to `runsc exec` as stdin, stdout and stderr, and
 * reads and writes the master. Window size: TIOCSWINSZ on the master (struct winsize: rows, cols u16 ...).
 *
 * Errors: PtyError when libc or /dev/ptmx is not available.
 */
import { closeSync, openSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { ReadStream } from 'node:tty';
import { LatticeError } from '../errors.js';

/** No pseudo-terminal could be made (koffi or libc missing, /dev/ptmx refused). */
export class PtyError extends LatticeError {
  override readonly name = 'PtyError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EDAEMON_PTY', message, options);
  }
}

/** An open pty pair: the master's streams (raw bytes both ways) and the slave's fd for the child. */
export interface Pty {
  /** The slave fd: give it to the child as stdin/stdout/stderr, then call closeSlave(). */
  slave: number;
  closeSlave(): void;
  /**
   * The master, both ways: what the process writes (reads end with an EIO error once every slave holder
   * closed: the end of its output) and what it reads.
   */
  master: ReadStream;
  resize(cols: number, rows: number): void;
  close(): void;
}

/** TIOCSWINSZ (asm-generic/ioctls.h). */
const TIOCSWINSZ = 0x5414;

interface Libc {
  posix_openpt(flags: number): number;
  grantpt(fd: number): number;
  unlockpt(fd: number): number;
  ptsname_r(fd: number, buf: Buffer, len: number): number;
  ioctl(fd: number, req: number, arg: Buffer): number;
}

/** libc's pty functions, loaded per call site (no module state): koffi caches the library itself. */
function libc(): Libc {
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const lib = koffi.load('libc.so.6');
    return {
      posix_openpt: lib.func('int posix_openpt(int flags)') as Libc['posix_openpt'],
      grantpt: lib.func('int grantpt(int fd)') as Libc['grantpt'],
      unlockpt: lib.func('int unlockpt(int fd)') as Libc['unlockpt'],
      ptsname_r: lib.func('int ptsname_r(int fd, _Out_ uint8_t *buf, size_t len)') as Libc['ptsname_r'],
      ioctl: lib.func('int ioctl(int fd, unsigned long req, uint8_t *arg)') as Libc['ioctl'],
    };
  } catch (err) {
    throw new PtyError(`cannot load libc through koffi for a terminal (${(err as Error).message.split('\n')[0]}); exec without a TTY`, { cause: err });
  }
}

/** Open a pty pair sized `cols` x `rows`. Errors: PtyError. */
export function openPty(cols = 80, rows = 24): Pty {
  const c = libc();
  const master = c.posix_openpt(constants.O_RDWR | constants.O_NOCTTY | 0o2000000 /* O_CLOEXEC */);
  if (master < 0) throw new PtyError('posix_openpt failed; is /dev/ptmx (devpts) mounted?');
  const name = Buffer.alloc(128);
  if (c.grantpt(master) !== 0 || c.unlockpt(master) !== 0 || c.ptsname_r(master, name, name.length) !== 0) {
    closeSync(master);
    throw new PtyError('grantpt/unlockpt/ptsname_r failed on a new pty; exec without a TTY');
  }
  const resize = (cols: number, rows: number) => {
    const ws = Buffer.alloc(8);
    ws.writeUInt16LE(rows, 0);
    ws.writeUInt16LE(cols, 2);
    c.ioctl(master, TIOCSWINSZ, ws);
  };
  resize(cols, rows);
  let slave: number | undefined = openSync(name.toString('utf8', 0, name.indexOf(0)), constants.O_RDWR | constants.O_NOCTTY);
  const stream = new ReadStream(master); // a net.Socket on the tty handle: readable and writable
  return {
    slave,
    closeSlave: () => {
      if (slave !== undefined) closeSync(slave);
      slave = undefined;
    },
    master: stream,
    resize,
    close: () => {
      stream.destroy();
    },
  };
}
