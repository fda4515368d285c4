/**
 * `lattice sandbox cp`: files in and out of a running sandbox, through the sandbox, never through its rootfs
 * directory on the host.
 *
 * Why not the host path: the rootfs directory is mounted read-only and holds only the image; what the sandbox
 * wrote lives in gVisor's memory (its /tmp tmpfs; with --overlay2 a writable root's upper layer is also
 * sandbox memory), so the host path would not even show it. And resolving sandbox paths on the host is the
 * classic escape: a symlink planted in the sandbox (`out -> /etc`), swapped between check and use, makes
 * the host read or write through it.
 *
 *   out:  runsc exec tar -c (inside: gVisor resolves every path, its symlinks stay inside the sandbox)
 *         ──tar stream, hostile input──▶ extractLayers (src/image/extract.ts: no absolute names, no '..',
 *         no write through a symlink, O_NOFOLLOW|O_EXCL creates, hardlinks only inside, no device nodes)
 *         into a fresh staging dir beside DST ──▶ setuid/setgid bits cleared ──▶ rename into place.
 *         Symlinks arrive as symlinks (never followed by us), files owned by the caller.
 *   in:   host tar -c of SRC (GNU tar does not follow symlinks inside SRC) ──▶ runsc exec tar -x in the
 *         sandbox: every write happens inside the sandbox, under its own view of the filesystem.
 *
 * Docker's rules for DST: an existing directory receives SRC under its own name; otherwise DST is the new
 * name (its parent must exist). A sandbox entry named `.wh.*` is not copied out (the extractor reads it as
 * an OCI whiteout).
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdtemp, readdir, rename, rm, chmod, stat } from 'node:fs/promises';
import { basename, dirname, join, posix, resolve } from 'node:path';
import { closeSync, constants, createWriteStream, openSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execa, type ResultPromise } from 'execa';
import { LatticeError, UsageError } from '../../errors.js';
import { extractLayers } from '../../image/extract.js';
import type { Runsc } from '../../runsc/client.js';
import type { SandboxRecord } from '../registry.js';
import { startExec } from './exec.js';

/** A copy failed inside the sandbox (tar's own message) or on the host; nothing was put in place. */
export class SandboxCopyError extends LatticeError {
  override readonly name = 'SandboxCopyError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ESANDBOX_COPY', message, options);
  }
}

/** `lattice sandbox cp SRC DST` parsed: exactly one side is NAME:/absolute/path. */
export interface CopyArgs {
  direction: 'in' | 'out';
  sandbox: string;
  /** Absolute path inside the sandbox. */
  sandboxPath: string;
  /** Path on the host as given (resolved against the cwd when used). */
  hostPath: string;
}

const SANDBOX_REF = /^([A-Za-z0-9][A-Za-z0-9_.-]*):(\/.*)$/;

/** Parse the two operands. Errors: UsageError when neither or both name a sandbox, or the path is not absolute. */
export function parseCopyArgs(src: string, dst: string): CopyArgs {
  const s = SANDBOX_REF.exec(src);
  const d = SANDBOX_REF.exec(dst);
  if (s && d) throw new UsageError('sandbox cp copies between the host and one sandbox; one of SRC and DST must be a host path');
  if (!s && !d) throw new UsageError(`sandbox cp needs one side as NAME:/absolute/path (got ${src} and ${dst})`);
  const [, sandbox, path] = (s ?? d)!;
  const clean = posix.normalize(path!);
  if (clean === '/') throw new UsageError('sandbox cp copies a file or directory under /, not / itself; name it, e.g. NAME:/tmp/out');
  return { direction: s ? 'out' : 'in', sandbox: sandbox!, sandboxPath: clean.replace(/\/$/, ''), hostPath: s ? dst : src };
}

/** Clear setuid/setgid on every regular file and directory under `dir` (lstat: symlinks are left alone). */
async function clearSetid(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const p = join(dir, name);
    const st = await lstat(p);
    if ((st.isFile() || st.isDirectory()) && st.mode & 0o6000) await chmod(p, st.mode & 0o1777);
    if (st.isDirectory()) await clearSetid(p);
  }
}

/**
 * A tar of one path being produced somewhere else (in a sandbox by packInSandbox, or read from the daemon
 * by the client): the bytes are hostile input.
 */
export interface TarSource {
  stream: Readable;
  /** Resolves once the producer finished well; SandboxCopyError (with its reason) when it failed. */
  done(): Promise<void>;
  /** Stop the producer (after the extractor refused the stream) and wait for it. */
  abort(): Promise<void>;
}

/**
 * `tar -c` of `sandboxPath` (under its base name) inside `record`'s sandbox: its stdout is the tar.
 * Errors from done(): SandboxCopyError with tar's reason (no such file...).
 */
export async function packInSandbox(record: SandboxRecord, sandboxPath: string, o: { runsc?: Runsc } = {}): Promise<TarSource> {
  const scratch = await mkdtemp(join(record.bundleDir, '..', 'cp-'));
  const started = await startExec(record, { args: ['tar', '-c', '-f', '-', '-C', posix.dirname(sandboxPath), posix.basename(sandboxPath)] }, {
    runsc: o.runsc,
    scratch,
    stdio: { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' },
  });
  let stderr = '';
  started.child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4096)));
  return {
    stream: started.child.stdout!,
    done: async () => {
      const code = await started.wait();
      if (code !== 0) throw new SandboxCopyError(`copying ${record.name}:${sandboxPath} failed in the sandbox: ${lastLine(stderr) || `tar exited ${code}`}`);
    },
    abort: async () => {
      await started.signal('SIGKILL');
      started.child.stdout?.destroy();
      await started.wait().catch(() => undefined);
    },
  };
}

/**
 * Where a copy of `sandboxPath` out to `hostPath` lands: DST/<base> when DST is a directory, else DST.
 * Errors: UsageError when the landing place's parent is not a directory (nothing is started).
 */
export async function copyOutTarget(sandboxPath: string, hostPath: string): Promise<string> {
  const dst = resolve(hostPath);
  const dstStat = await stat(dst).catch(() => undefined);
  const final = dstStat?.isDirectory() ? join(dst, posix.basename(sandboxPath)) : dst;
  const parent = dirname(final);
  if (!(await stat(parent).catch(() => undefined))?.isDirectory()) throw new UsageError(`${parent} is not a directory; create it first or name an existing one`);
  return final;
}

/**
 * Put the entry `name` of the hostile tar `src` at `final` on the host: extracted by extractLayers into a
 * fresh staging dir beside `final`, setuid/setgid cleared, renamed into place. `label` names the source in
 * errors. Errors: ImageExtractError (an entry would leave the staging dir: nothing put in place),
 * SandboxCopyError (the producer failed, nothing under `name`, or `final` taken).
 */
export async function landTar(src: TarSource, label: string, name: string, final: string): Promise<string> {
  const staging = join(dirname(final), `.lattice-cp-${randomBytes(4).toString('hex')}`);
  try {
    try {
      await extractLayers([{ name: label, open: async () => src.stream }], staging, { chown: false });
    } catch (err) {
      await src.abort();
      throw err;
    }
    await src.done();
    await clearSetid(staging);
    const got = join(staging, name);
    if (!(await lstat(got).catch(() => undefined))) throw new SandboxCopyError(`copying ${label}: the sandbox sent nothing under that name`);
    await rename(got, final).catch((err: NodeJS.ErrnoException) => {
      throw new SandboxCopyError(`cannot put the copy at ${final} (${err.code ?? err.message}); remove what is there or pick another DST`, { cause: err });
    });
    return final;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * Copy `sandboxPath` out of `record` to `hostPath`. Returns where it landed.
 * Errors: UsageError (DST's parent missing), SandboxCopyError (tar in the sandbox failed: no such file...),
 * ImageExtractError (the stream held an entry that would leave DST: nothing is put in place).
 */
export async function copyOut(record: SandboxRecord, sandboxPath: string, hostPath: string, o: { runsc?: Runsc } = {}): Promise<string> {
  const final = await copyOutTarget(sandboxPath, hostPath);
  return landTar(await packInSandbox(record, sandboxPath, o), `${record.name}:${sandboxPath}`, posix.basename(sandboxPath), final);
}

/** Whether `path` is a directory inside `record`'s sandbox (`test -d` there; false when missing). */
export async function sandboxIsDir(record: SandboxRecord, path: string, o: { runsc?: Runsc } = {}): Promise<boolean> {
  const scratch = await mkdtemp(join(record.bundleDir, '..', 'cp-'));
  const probe = await startExec(record, { args: ['test', '-d', path] }, { runsc: o.runsc, scratch, stdio: { stdin: 'ignore', stdout: 'ignore', stderr: 'ignore' } });
  return (await probe.wait()) === 0;
}

/**
 * Docker's rule for a copy in of host `hostSrc` to `sandboxPath` (pure): into it under SRC's name when it is
 * a directory in the sandbox (`intoDir`), else as the new name `sandboxPath`.
 */
export function copyInTarget(intoDir: boolean, hostSrc: string, sandboxPath: string): { destDir: string; destName: string } {
  return intoDir ? { destDir: sandboxPath, destName: basename(resolve(hostSrc)) } : { destDir: posix.dirname(sandboxPath), destName: posix.basename(sandboxPath) };
}

/**
 * Host `tar -c` of `hostSrc` with its top entry renamed to `destName` (GNU tar stores symlinks inside SRC as
 * symlinks; --transform renames the top entry and what is under it). Its stdout is the tar.
 * The caller checks that SRC exists (a missing one fails in tar).
 */
export function packHost(hostSrc: string, destName: string): ResultPromise {
  const src = resolve(hostSrc);
  return execa('tar', ['-c', '-f', '-', '-C', dirname(src), '--transform', `s|^${sedPattern(basename(src))}|${sedReplacement(destName)}|`, '--', basename(src)], {
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    reject: false,
    buffer: { stdout: false, stderr: true },
  });
}

/**
 * Extract the tar `input` into `destDir` inside `record`'s sandbox (`tar -x` there: every write happens
 * under the sandbox's own view of its filesystem). `label` names the target in errors.
 * Errors: SandboxCopyError with tar's reason (read-only, no such directory...).
 */
export async function unpackInSandbox(record: SandboxRecord, destDir: string, input: Readable, label: string, o: { runsc?: Runsc } = {}): Promise<void> {
  // A real pipe (a FIFO in the scratch dir) into the sandbox's tar: gVisor reads a host socket (what a Node
  // 'pipe' is) as stdin with short reads that busybox tar takes for a truncated archive.
  const scratch = await mkdtemp(join(record.bundleDir, '..', 'cp-'));
  const fifo = join(scratch, 'in.fifo');
  await execa('mkfifo', ['-m', '600', fifo]);
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFd = openSync(fifo, constants.O_WRONLY);
  let started: Awaited<ReturnType<typeof startExec>>;
  try {
    started = await startExec(record, { args: ['tar', '-x', '-f', '-', '-C', destDir] }, {
      runsc: o.runsc,
      scratch,
      stdio: { stdin: readFd as unknown as 'pipe', stdout: 'ignore', stderr: 'pipe' },
    });
  } catch (err) {
    closeSync(writeFd);
    throw err;
  } finally {
    closeSync(readFd);
  }
  let stderr = '';
  started.child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4096)));
  // The writer closes writeFd when `input` ends (EOF for tar) or fails; a tar that stopped reading makes it EPIPE.
  const fed = pipeline(input, createWriteStream('', { fd: writeFd })).catch(() => undefined);
  const code = await started.wait();
  await fed;
  if (code !== 0) throw new SandboxCopyError(`writing ${label} failed in the sandbox: ${lastLine(stderr) || `tar exited ${code}`}`);
}

/**
 * Copy host `hostPath` into `record` at `sandboxPath`. Returns the path inside the sandbox.
 * Errors: UsageError (SRC missing), SandboxCopyError (tar in the sandbox refused: read-only, no such dir...).
 */
export async function copyIn(record: SandboxRecord, hostPath: string, sandboxPath: string, o: { runsc?: Runsc } = {}): Promise<string> {
  const src = resolve(hostPath);
  if (!(await lstat(src).catch(() => undefined))) throw new UsageError(`${hostPath} does not exist on the host`);
  // Where it goes: into sandboxPath when that is a directory in the sandbox, else as sandboxPath.
  const probe = await startExec(record, { args: ['test', '-d', sandboxPath] }, { runsc: o.runsc, scratch: await mkdtemp(join(record.bundleDir, '..', 'cp-')), stdio: { stdin: 'ignore', stdout: 'ignore', stderr: 'ignore' } });
  const intoDir = (await probe.wait()) === 0;
  const destDir = intoDir ? sandboxPath : posix.dirname(sandboxPath);
  const destName = intoDir ? basename(src) : posix.basename(sandboxPath);
  // A real pipe (a FIFO in the scratch dir) from the host tar to the sandbox's: gVisor reads a host socket
  // (what a Node 'pipe' is) as stdin with short reads that busybox tar takes for a truncated archive.
  const scratch = await mkdtemp(join(record.bundleDir, '..', 'cp-'));
  const fifo = join(scratch, 'in.fifo');
  await execa('mkfifo', ['-m', '600', fifo]);
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFd = openSync(fifo, constants.O_WRONLY);
  let pack: ResultPromise;
  let started: Awaited<ReturnType<typeof startExec>>;
  try {
    // GNU tar stores symlinks inside SRC as symlinks; --transform renames the top entry (and what is under it).
    pack = execa('tar', ['-c', '-f', '-', '-C', dirname(src), '--transform', `s|^${sedPattern(basename(src))}|${sedReplacement(destName)}|`, '--', basename(src)], {
      stdin: 'ignore',
      stdout: writeFd as unknown as 'pipe',
      stderr: 'pipe',
      reject: false,
    });
    started = await startExec(record, { args: ['tar', '-x', '-f', '-', '-C', destDir] }, {
      runsc: o.runsc,
      scratch,
      stdio: { stdin: readFd as unknown as 'pipe', stdout: 'ignore', stderr: 'pipe' },
    });
  } finally {
    closeSync(writeFd);
    closeSync(readFd);
  }
  let stderr = '';
  started.child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4096)));
  const [packed, code] = await Promise.all([pack, started.wait()]);
  if (packed.exitCode !== 0) throw new SandboxCopyError(`reading ${hostPath} on the host failed: ${lastLine(String(packed.stderr))}`);
  if (code !== 0) throw new SandboxCopyError(`writing ${record.name}:${posix.join(destDir, destName)} failed in the sandbox: ${lastLine(stderr) || `tar exited ${code}`}`);
  return posix.join(destDir, destName);
}

/** The last line of tar's complaint that says something (busybox ends with "error exit delayed..."). */
const lastLine = (s: string) =>
  s
    .trim()
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/error exit delayed/.test(l))
    .at(-1) ?? '';
const sedPattern = (s: string) => s.replace(/[\\|&.*^$[\]]/g, '\\$&');
const sedReplacement = (s: string) => s.replace(/[\\|&]/g, '\\$&');
