import type { Command } from 'commander';
import { LatticeError, UsageError, errorMessage } from '../errors.js';

/**
 * Parse argv and run; every failure becomes one line on stderr and a non-zero exit.
 * Exit codes: 2 for bad usage, 1 for any other failure; a command that passes through a child's exit
 * code sets process.exitCode itself.
 */
export async function runCli(program: Command, argv: string[]): Promise<void> {
  program.exitOverride();
  program.configureOutput({ outputError: (str, write) => write(str) });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const debug = argv.includes('--debug');
    const code = (err as { code?: string }).code ?? '';
    if (code.startsWith('commander.')) {
      // commander already printed its message (help, version, or a usage error).
      const exit = (err as { exitCode?: number }).exitCode ?? 2;
      process.exitCode = exit === 1 ? 2 : exit;
      return;
    }
    if (debug) console.error(err);
    else console.error(`lattice: ${errorMessage(err)}`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
    if (!(err instanceof LatticeError) && !debug) console.error('lattice: (unexpected error; rerun with --debug for details)');
  }
}

/** Global options every command can read (state dir, debug). */
export function globalOpts(cmd: Command): { stateDir?: string; debug?: boolean } {
  return cmd.optsWithGlobals() as { stateDir?: string; debug?: boolean };
}
