/**
 * `lattice sandbox exec|cp|pause|resume|checkpoint|restore`: work inside a running sandbox. Wiring only; the
 * operations are plain functions in src/sandbox/ops/, shared with the daemon.
 */
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { parseEnv, requireRoot } from '../sandbox/inputs.js';
import { resolveStateDir } from '../state.js';
import { globalOpts } from './run.js';

const collect = (v: string, prev: string[]) => [...prev, v];

/** The running sandbox named `which` in the state dir of `command`. */
async function running(command: Command, which: string) {
  const [{ SandboxRegistry }, { findRunningSandbox }] = await Promise.all([import('../sandbox/registry.js'), import('../sandbox/ops/find.js')]);
  return findRunningSandbox(new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir)), which);
}

/** Register the in-sandbox operations on the `sandbox` command. */
export function registerSandboxOps(sandbox: Command): void {
  sandbox
    .command('exec')
    .description('run CMD in a running sandbox (runsc exec); stdio, signals and the exit code pass through as with run')
    .argument('<sandbox>', 'sandbox id or name (see lattice sandbox ls)')
    .argument('<cmd...>', 'command and arguments, after --')
    .option('-i, --interactive', 'pass stdin to the command (default: /dev/null)')
    .option('-t, --tty', 'give the command the caller\'s terminal (stdin must be one)')
    .option('--user <user[:group]>', 'user inside the sandbox: numbers, or names from the image\'s /etc/passwd and /etc/group')
    .option('--env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
    .option('--cwd <dir>', 'working directory inside the sandbox')
    .option('--stop-timeout <seconds>', 'on SIGINT/SIGTERM: seconds the command gets to exit before SIGKILL', '10')
    .action(async (which: string, cmd: string[], o: Record<string, unknown>, command: Command) => {
      const env = parseEnv(o.env as string[]);
      const grace = Number(o.stopTimeout);
      if (!(Number.isFinite(grace) && grace >= 0)) throw new UsageError(`--stop-timeout ${String(o.stopTimeout)} is not a number of seconds; use e.g. --stop-timeout 10`);
      requireRoot();
      const record = await running(command, which);
      const [{ execInSandbox }, { resolveUser }, { createLogger }] = await Promise.all([
        import('../sandbox/ops/exec.js'),
        import('../sandbox/prepare.js'),
        import('../log.js'),
      ]);
      const user = o.user === undefined ? undefined : await resolveUser(o.user as string, record.rootfs);
      process.exitCode = await execInSandbox(
        record,
        { args: cmd, env, cwd: o.cwd as string | undefined, user },
        { interactive: Boolean(o.interactive), tty: Boolean(o.tty), stopGraceMs: grace * 1000, log: createLogger({ level: globalOpts(command).debug ? 'debug' : undefined }) },
      );
    });

  sandbox
    .command('cp')
    .description('copy a file or directory between the host and a running sandbox (NAME:/path on one side); through the sandbox, never via its rootfs on the host')
    .argument('<src>', 'host path, or NAME:/absolute/path in a sandbox')
    .argument('<dst>', 'host path, or NAME:/absolute/path in a sandbox')
    .action(async (src: string, dst: string, _o: unknown, command: Command) => {
      const { parseCopyArgs, copyIn, copyOut } = await import('../sandbox/ops/cp.js');
      const a = parseCopyArgs(src, dst);
      requireRoot();
      const record = await running(command, a.sandbox);
      const where = a.direction === 'out' ? await copyOut(record, a.sandboxPath, a.hostPath) : `${a.sandbox}:${await copyIn(record, a.hostPath, a.sandboxPath)}`;
      console.error(`lattice: copied to ${where}`);
    });

  for (const [verb, what] of [
    ['pause', 'freeze every process of a running sandbox (runsc pause); its memory and network stay'],
    ['resume', 'thaw a paused sandbox (runsc resume)'],
  ] as const) {
    sandbox
      .command(verb)
      .description(what)
      .argument('<sandbox>', 'sandbox id or name (see lattice sandbox ls)')
      .action(async (which: string, _o: unknown, command: Command) => {
        requireRoot();
        const record = await running(command, which);
        const { pauseSandbox, resumeSandbox } = await import('../sandbox/ops/pause.js');
        await (verb === 'pause' ? pauseSandbox : resumeSandbox)(record);
        console.error(`lattice: ${verb === 'pause' ? 'paused' : 'resumed'} ${record.name} (${record.id})`);
      });
  }
}
