import type { Command } from 'commander';
import { resolveStateDir } from '../state.js';
import { UsageError } from '../errors.js';
import { parseEnv, parseUser, requireCommand, requireRoot, resolveRootfsArg } from '../sandbox/inputs.js';
import { globalOpts } from './run.js';

// Heavy modules load inside the actions: every command pays only for what it uses.
const sandboxModules = async () => {
  const [{ SandboxRegistry, isLauncherAlive }, { collectOrphans }, { Runsc }] = await Promise.all([
    import('../sandbox/registry.js'),
    import('../sandbox/gc.js'),
    import('../runsc/client.js'),
  ]);
  return { SandboxRegistry, isLauncherAlive, collectOrphans, Runsc };
};

const collect = (v: string, prev: string[]) => [...prev, v];

export function registerSandbox(program: Command): void {
  const sandbox = program.command('sandbox').description('run and inspect gVisor sandboxes');

  sandbox
    .command('run')
    .description('run CMD in a fresh gVisor sandbox; stdio, signals and the exit code pass through')
    .option('--rootfs <dir|tar>', 'root filesystem: a directory or a .tar/.tar.gz')
    .option('--name <name>', 'sandbox name (default: its id)')
    .option('--network <mode>', 'network: none', 'none')
    .option('--env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
    .option('--cwd <dir>', 'working directory inside the sandbox', '/')
    .option('--user <uid[:gid]>', 'user to run as inside the sandbox')
    .option('--cap-add <cap>', 'grant a Linux capability inside the sandbox (repeatable; default none)', collect, [])
    .option('--keep', 'keep the bundle and record after exit')
    .argument('[cmd...]', 'command and arguments, after --')
    .action(async (cmd: string[], o: Record<string, unknown>, command: Command) => {
      const g = globalOpts(command);
      const args = requireCommand(cmd);
      if (o.network !== 'none') throw new UsageError(`--network ${String(o.network)} is not supported here; use --network none`);
      requireRoot();
      const rootfs = await resolveRootfsArg(o.rootfs as string | undefined);
      if (rootfs.kind !== 'dir') throw new UsageError('tarball rootfs needs the image module; extract it to a directory first');
      const [{ createLogger }, { runSandbox }] = await Promise.all([import('../log.js'), import('../sandbox/run.js')]);
      const log = createLogger({ level: g.debug ? 'debug' : undefined });
      process.exitCode = await runSandbox({
        stateDir: resolveStateDir(g.stateDir),
        name: o.name as string | undefined,
        rootfs: rootfs.path,
        args,
        env: parseEnv(o.env as string[]),
        cwd: o.cwd as string,
        user: parseUser(o.user as string | undefined),
        capabilities: o.capAdd as string[],
        keep: Boolean(o.keep),
        debug: g.debug,
        log,
      });
    });

  sandbox
    .command('ls')
    .description('list sandboxes lattice started (orphans of dead launchers are removed first)')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }, command: Command) => {
      const { SandboxRegistry, isLauncherAlive, collectOrphans, Runsc } = await sandboxModules();
      const registry = new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir));
      await collectOrphans(registry, (r) => new Runsc({ root: r.runscRoot }));
      const rows = (await registry.list()).map((r) => ({
        id: r.id,
        name: r.name,
        status: r.kept ? 'exited (kept)' : isLauncherAlive(r) ? 'running' : 'orphan',
        address: r.address ?? '-',
        created: r.createdAt,
        command: r.args.join(' '),
      }));
      if (o.json) {
        console.log(JSON.stringify(rows, null, 2));
        return;
      }
      printTable(rows, ['id', 'name', 'status', 'address', 'created', 'command']);
    });

  program
    .command('gc')
    .description('remove containers, networks and bundles whose launcher is gone')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }, command: Command) => {
      const { SandboxRegistry, collectOrphans, Runsc } = await sandboxModules();
      const registry = new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir));
      const { removed } = await collectOrphans(registry, (r) => new Runsc({ root: r.runscRoot }));
      if (o.json) console.log(JSON.stringify({ removed }));
      else console.log(removed.length ? `removed ${removed.join(' ')}` : 'nothing to remove');
    });
}

export function printTable<T extends Record<string, unknown>>(rows: T[], cols: (keyof T & string)[]): void {
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log(line(cols.map((c) => c.toUpperCase())));
  for (const r of rows) console.log(line(cols.map((c) => String(r[c]))));
}
