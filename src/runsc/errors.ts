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
    super('ENOCONTAINER', `no sandbox container "${id}"; list them with: lattice sandbox ls`);
  }
}

/** The last meaningful line runsc printed, stripped of its log prefix. */
export function runscMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !/^[DIW]\d{4} /.test(l));
  return lines.at(-1) ?? 'no message (exit without output)';
}
