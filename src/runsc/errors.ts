import { LatticeError } from '../errors.js';

/** runsc said no. The message quotes runsc's own last line and says where the debug log is. */
export class RunscError extends LatticeError {
  override readonly name = 'RunscError';
  constructor(
    readonly command: string,
    readonly runscMessage: string,
    readonly debugLogDir: string | undefined,
    options?: { cause?: unknown },
  ) {
    const where = debugLogDir ? ` (debug log: ${debugLogDir})` : ' (rerun with --debug to keep runsc debug logs)';
    super('ERUNSC', `runsc ${command} failed: ${runscMessage}${where}`, options);
  }
}

export class RunscNotFoundError extends LatticeError {
  override readonly name = 'RunscNotFoundError';
  constructor(binary: string) {
    super(
      'ERUNSC_MISSING',
      `runsc not found (${binary}); install it with: make setup (or apt-get install -t bookworm-backports --no-install-recommends runsc)`,
    );
  }
}

export class ContainerNotFoundError extends LatticeError {
  override readonly name = 'ContainerNotFoundError';
  constructor(id: string) {
    super('ERUNSC_NO_CONTAINER', `no sandbox container "${id}"; list them with: lattice sandbox ls`);
  }
}

/** The last meaningful line runsc printed, stripped of its log prefix. */
export function runscMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !/^[DIW]\d{4} /.test(l));
  // A Go panic (runsc's checkpoint/restore failures end in one) prints its error, then goroutine traces.
  const trace = lines.findIndex((l) => /^goroutine \d+ \[/.test(l));
  if (trace > 0) return lines.slice(0, trace).filter((l) => !/^panic: *$/.test(l)).at(-1)!;
  return lines.at(-1) ?? 'no message (exit without output)';
}

/**
 * The sandboxed command could not be started: not found (exit 127) or not executable (exit 126), the
 * exit codes of shells and `docker run`. `command` is what the user asked for.
 */
export class CommandStartError extends LatticeError {
  override readonly name = 'CommandStartError';
  constructor(
    readonly command: string,
    readonly reason: 'not-found' | 'not-executable',
    detail: string,
  ) {
    super(
      reason === 'not-found' ? 'ESANDBOX_COMMAND_NOT_FOUND' : 'ESANDBOX_COMMAND_NOT_EXECUTABLE',
      reason === 'not-found'
        ? `${command}: command not found in the sandbox (${detail}); check the name, or give its absolute path inside the root filesystem`
        : `${command}: cannot execute in the sandbox (${detail}); it must be an executable file for this architecture`,
      { exitCode: reason === 'not-found' ? 127 : 126 },
    );
  }
}

/**
 * runsc's own "could not create the process" line -> CommandStartError, or undefined when the failure
 * is something else. Forms seen from runsc 20240729:
 *   ...creating process: failed to load /nonexist: no such file or directory
 *   ...creating process: failed to load /etc/passwd: permission denied
 *   ...error finding executable "nonexist" in PATH [/usr/local/sbin ...]: no such file or directory
 */
export function commandStartError(message: string): CommandStartError | undefined {
  const inPath = /error finding executable "([^"]*)" in PATH \[([^\]]*)\]/.exec(message);
  if (inPath) return new CommandStartError(inPath[1]!, 'not-found', `PATH ${inPath[2]!.split(' ').join(':')}`);
  const load = /failed to load (.+?): ([a-z ]+)$/.exec(message);
  if (!load) return undefined;
  const [, path, why] = load as unknown as [string, string, string];
  if (why === 'no such file or directory' || why === 'not a directory') return new CommandStartError(path, 'not-found', why);
  if (/permission denied|is a directory|exec format error/.test(why)) return new CommandStartError(path, 'not-executable', why);
  return undefined;
}
