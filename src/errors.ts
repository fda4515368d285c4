/**
 * One error class per failure, each with a stable `code`, a `cause`, and a message that tells the
 * user what is wrong and what to do next. The CLI prints `message` on one line (stack only with --debug).
 */
export class LatticeError extends Error {
  override readonly name: string = 'LatticeError';
  /** The CLI's exit code when this error ends a command; unset: by class (see src/cli/run.ts). */
  readonly exitCode?: number;
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown; exitCode?: number },
  ) {
    super(message, options);
    if (options?.exitCode !== undefined) this.exitCode = options.exitCode;
  }
}

/** The user gave something we cannot use (a flag, a file, a config). Exit code 2. */
export class UsageError extends LatticeError {
  override readonly name = 'UsageError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EUSAGE', message, options);
  }
}

/** A required host component (runsc, nats-server, root, TUN...) is missing or unusable. */
export class PrerequisiteError extends LatticeError {
  override readonly name = 'PrerequisiteError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EPREREQ', message, options);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
