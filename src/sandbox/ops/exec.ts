/**
 * `lattice sandbox exec`: a second process in a running sandbox (`runsc exec`), with stdio, signals and exit
 * status as `sandbox run` gives them:
 *
 *   caller's fds ──(planStdio: tty/pipe/socket handed over; a regular file copied through a pipe)──▶ runsc exec
 *   SIGINT/SIGTERM ──▶ runsc kill --pid <in-sandbox pid> (runsc exec itself does not forward signals: killed,
 *                      it would leave the process running in the sandbox); a second signal, or the grace
 *                      period, sends SIGKILL
 *   exit status ◀── the process's (128+N when signal N ended it); 127/126 when the command cannot start
 *
 * A TTY: runsc gives the process a pseudo-terminal exactly when its stdin is one, so `-t` hands the caller's
 * terminal over as is (and refuses a stdin that is not a terminal, as `docker exec -t` does); without `-t` the
 * process's stdin is never the caller's terminal. Without `-i` stdin is /dev/null.
 *
 * Plain functions on a SandboxRecord, so the CLI and the daemon share them: startExec() is the engine
 * (streams are the caller's to wire), execInSandbox() is the CLI's foreground use.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ResultPromise } from 'execa';
import type { Logger } from 'pino';
import { UsageError } from '../../errors.js';
import { Runsc, type StdioOptions } from '../../runsc/client.js';
import { commandStartError, RunscError, runscMessage } from '../../runsc/errors.js';
import type { SandboxRecord } from '../registry.js';
import { DEFAULT_STOP_GRACE_MS, signalNumber, stopOnSignals } from '../signals.js';
import { copyInto, feedStdin, openMergedPipe, planStdio, type StdioPlan } from '../stdio.js';

/** What to run: the command and its process settings (user already resolved to numbers). */
export interface ExecRequest {
  args: string[];
  env?: string[];
  cwd?: string;
  user?: { uid: number; gid: number };
}

/** A process started in a sandbox. */
export interface StartedExec {
  child: ResultPromise;
  /** Send a signal to the process inside the sandbox (waits for runsc to report its pid; no-op once it is gone). */
  signal(sig: NodeJS.Signals): Promise<void>;
  /** The exit status (128+N after signal N). Errors: CommandStartError (127/126), RunscError. */
  wait(): Promise<number>;
}

/** How long a signal waits for runsc's pid file of a process that has just started (ms). */
const PID_FILE_WAIT_MS = 10_000;

/** runsc's own failure line of an exec (as opposed to the process's stderr). */
export const RUNSC_EXEC_FAILURE = /^executing processes for container/;

/**
 * Start `req` in `record`'s sandbox with `stdio` (execa stdio options; default inherit). `scratch` is a
 * private directory for runsc's pid file, removed by wait(). `runsc` defaults to one on record.runscRoot.
 */
export async function startExec(record: SandboxRecord, req: ExecRequest, o: { stdio?: StdioOptions; runsc?: Runsc; scratch: string }): Promise<StartedExec> {
  if (req.args.length === 0) throw new UsageError('sandbox exec needs a command: lattice sandbox exec NAME -- CMD [ARG...]');
  const runsc = o.runsc ?? new Runsc({ root: record.runscRoot });
  const pidFile = join(o.scratch, 'pid');
  const { child } = await runsc.execAttached(record.id, req.args, { ...req, internalPidFile: pidFile }, o.stdio);
  // runsc's own failure line is the last of its stderr: keep a bounded tail (output is not buffered).
  let stderrTail = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderrTail = (stderrTail + chunk.toString('latin1')).slice(-4096)));
  let done = false;
  const pid = async () => {
    try {
      const n = Number.parseInt(await readFile(pidFile, 'utf8'), 10);
      return Number.isInteger(n) && n > 0 ? n : undefined;
    } catch {
      return undefined;
    }
  };
  return {
    child,
    signal: async (sig) => {
      // runsc writes the pid file after the process started: a signal that arrives in between (the process
      // may already have printed) waits for it, up to PID_FILE_WAIT_MS, or until the process is gone.
      let p = await pid();
      for (let waited = 0; p === undefined && !done && waited < PID_FILE_WAIT_MS; waited += 10) {
        await new Promise((r) => setTimeout(r, 10));
        p = await pid();
      }
      if (p === undefined || done) return;
      await runsc.signalProcess(record.id, p, sig).catch(() => undefined); // already gone: nothing to stop
    },
    wait: async () => {
      const r = await child;
      done = true;
      await rm(o.scratch, { recursive: true, force: true });
      const code = r.exitCode ?? (r.signal ? 128 + signalNumber(r.signal) : 1);
      const last = runscMessage(stderrTail);
      if (code === 128 && RUNSC_EXEC_FAILURE.test(last)) throw commandStartError(last) ?? new RunscError('exec', last, undefined);
      return code;
    },
  };
}

export interface ExecInSandboxOptions {
  /** -i: the caller's stdin goes to the process (else /dev/null). */
  interactive?: boolean;
  /** -t: the caller's terminal becomes the process's (stdin must be a terminal). */
  tty?: boolean;
  /** How fds 0/1 reach the sandbox (default planStdio()); `stdinIsTty` is checked for -t. */
  stdio?: StdioPlan;
  stdinIsTty?: boolean;
  stopGraceMs?: number;
  runsc?: Runsc;
  log: Logger;
}

/**
 * The CLI's exec: `req` in `record` in the foreground, wired to this process's stdio and signals.
 * Returns the exit status. Errors: UsageError (-t without a terminal), CommandStartError, RunscError.
 */
export async function execInSandbox(record: SandboxRecord, req: ExecRequest, o: ExecInSandboxOptions): Promise<number> {
  const stdinIsTty = o.stdinIsTty ?? process.stdin.isTTY === true;
  if (o.tty && !stdinIsTty) throw new UsageError('sandbox exec -t needs a terminal on stdin; drop -t (and use -i to pass stdin)');
  const scratch = await mkdtemp(join(record.bundleDir, '..', 'exec-'));
  const plan = o.stdio ?? planStdio();
  // Without -t the process must not get the caller's terminal as stdin: runsc would make it a pty.
  const stdinMode = o.tty ? 'inherit' : !o.interactive ? 'ignore' : stdinIsTty ? 'pipe' : plan.stdin;
  const merged = !o.tty && plan.stdout === 'pipe' && plan.merged ? await openMergedPipe(scratch) : undefined;
  let started: StartedExec;
  try {
    started = await startExec(record, req, {
      runsc: o.runsc,
      scratch,
      stdio: {
        stdin: stdinMode,
        stdout: o.tty ? 'inherit' : merged ? (merged.writeFd as unknown as 'pipe') : plan.stdout,
        // Piped so runsc's own failure line can be told from the process's output (and not printed twice).
        stderr: o.tty ? 'inherit' : merged ? (merged.writeFd as unknown as 'pipe') : 'pipe',
      },
    });
  } catch (err) {
    await rm(scratch, { recursive: true, force: true });
    throw err;
  } finally {
    merged?.closeWriter();
  }
  const { child } = started;
  if (stdinMode === 'pipe' && child.stdin) feedStdin(process.stdin, child.stdin);
  const copied = !o.tty && plan.stdout === 'pipe' && !merged && child.stdout ? copyInto(child.stdout, process.stdout) : undefined;
  const errStream = merged ? merged.reader : child.stderr;
  const errOut = merged ? process.stdout : process.stderr;
  const errDone = errStream ? new Promise<void>((resolve) => errStream.once('close', () => resolve())) : undefined;
  errStream?.on('data', (chunk: Buffer) => {
    if (!RUNSC_EXEC_FAILURE.test(chunk.toString('latin1', 0, 64))) errOut.write(chunk);
  });
  const stopper = stopOnSignals((sig) => started.signal(sig), record.id, o.stopGraceMs ?? DEFAULT_STOP_GRACE_MS, o.log);
  try {
    const code = await started.wait();
    await Promise.all([copied, errDone]);
    return code;
  } finally {
    stopper.dispose();
    if (stdinMode === 'pipe') process.stdin.unpipe();
    if (stdinMode === 'pipe') process.stdin.destroy();
  }
}
