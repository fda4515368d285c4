import type { Command } from 'commander';
import { LatticeError, UsageError, errorMessage } from '../errors.js';

/**
 * Exit codes, the conventions of `docker run` (README, "Exit codes"):
 *
 *   0        success (or the sandboxed command's own 0)
 *   1        a command that runs no sandbox failed (control plane unreachable, token refused, ...)
 *   2        bad usage: unknown command or option, a missing or invalid value; nothing was changed
 *   125      `sandbox run` / `sandbox start`: lattice itself failed, so the command's status is unknown
 *   126      the sandboxed command exists but cannot be executed (permission denied, not a program)
 *   127      the sandboxed command was not found
 *   128+N    the sandboxed command was killed by signal N (143 = SIGTERM, 137 = SIGKILL)
 *   other    the sandboxed command's own exit code
 */
export const EXIT = { ok: 0, failure: 1, usage: 2, launcher: 125, notExecutable: 126, notFound: 127 } as const;

/** Commands whose exit code is their child's: their own failures must not look like one (docker run's 125). */
const PASSES_THROUGH_A_CHILD = new Set(['sandbox run', 'sandbox start']);

function commandPath(c: Command): string {
  const names: string[] = [];
  for (let x: Command | null = c; x?.parent; x = x.parent) names.unshift(x.name());
  return names.join(' ');
}

/** exitOverride and output settings are copied to subcommands only at creation: apply them to the whole tree. */
function configureTree(c: Command): void {
  c.exitOverride();
  c.configureOutput({ outputError: (str, write) => write(str.replace(/^error: /, 'lattice: ')) });
  c.showHelpAfterError(`(see: ${['lattice', commandPath(c)].filter(Boolean).join(' ')} --help)`);
  for (const sub of c.commands) configureTree(sub);
}

/**
 * Parse argv and run; every failure becomes one line on stderr and the exit code of the table above.
 * A command that passes through a child's exit code sets process.exitCode itself. After a failure the
 * process exits at once: a half-started pipeline (a NATS reconnect timer, a watcher) must not keep it alive.
 */
export async function runCli(program: Command, argv: string[]): Promise<void> {
  configureTree(program);
  let action: Command | undefined;
  program.hook('preAction', (_root, actionCommand) => {
    action = actionCommand;
  });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const debug = argv.includes('--debug');
    const code = (err as { code?: string }).code ?? '';
    if (code.startsWith('commander.')) {
      // commander already printed its message (help, version, or a usage error).
      const exit = (err as { exitCode?: number }).exitCode ?? EXIT.usage;
      process.exit(exit === 0 ? 0 : EXIT.usage);
    }
    if (debug) console.error(err);
    else console.error(`lattice: ${errorMessage(err)}`);
    if (!(err instanceof LatticeError) && !debug) console.error('lattice: (unexpected error; rerun with --debug for details)');
    process.exit(exitCodeOf(err, action ? commandPath(action) : ''));
  }
}

/** The exit code for an error thrown by the command at `path` (e.g. "sandbox run"). */
export function exitCodeOf(err: unknown, path: string): number {
  if (err instanceof LatticeError && err.exitCode !== undefined) return err.exitCode;
  if (err instanceof UsageError) return EXIT.usage;
  return PASSES_THROUGH_A_CHILD.has(path) ? EXIT.launcher : EXIT.failure;
}

/** Global options every command can read (state dir, debug). */
export function globalOpts(cmd: Command): { stateDir?: string; debug?: boolean; verbose?: boolean } {
  return cmd.optsWithGlobals() as { stateDir?: string; debug?: boolean; verbose?: boolean };
}
