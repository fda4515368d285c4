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

  sandbox
    .command('checkpoint')
    .description('save a running sandbox (memory, processes, network state) to DIR and stop it (runsc checkpoint); continue it with sandbox restore DIR')
    .argument('<sandbox>', 'sandbox id or name (see lattice sandbox ls)')
    .requiredOption('--to <dir>', 'new or empty directory for the checkpoint (made 0700; it holds the sandbox\'s whole memory)')
    .action(async (which: string, o: { to: string }, command: Command) => {
      requireRoot();
      const [{ SandboxRegistry }, { findRunningSandbox }, { checkpointSandbox }] = await Promise.all([
        import('../sandbox/registry.js'),
        import('../sandbox/ops/find.js'),
        import('../sandbox/ops/checkpoint.js'),
      ]);
      const registry = new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir));
      const record = await findRunningSandbox(registry, which);
      const path = await checkpointSandbox(record, o.to, { registry });
      console.error(`lattice: checkpointed ${record.name} (${record.id}) to ${path}; it stopped. Continue it with: lattice sandbox restore ${path}`);
    });

  sandbox
    .command('restore')
    .description('continue a checkpointed sandbox in the foreground (runsc restore): same memory, same WireGuard identity and overlay address')
    .argument('<dir>', 'the directory sandbox checkpoint --to wrote')
    .option('--name <name>', 'name of the restored sandbox (default: the checkpointed one\'s; the agent identity stays the checkpoint\'s)')
    .option('--advertise <host>', 'host to advertise to peers with our WireGuard port (enrolled sandboxes)', '127.0.0.1')
    .option('--control-plane <url>', 'NATS URL(s) of the control plane, tried before the ones stored at enrollment')
    .option('--keep', 'keep the bundle and record after exit (remove it later with lattice sandbox rm)')
    .option('--stop-timeout <seconds>', 'on SIGINT/SIGTERM: seconds the sandbox gets to exit before SIGKILL', '10')
    .action(async (dir: string, o: Record<string, unknown>, command: Command) => {
      const g = globalOpts(command);
      const grace = Number(o.stopTimeout);
      if (!(Number.isFinite(grace) && grace >= 0)) throw new UsageError(`--stop-timeout ${String(o.stopTimeout)} is not a number of seconds; use e.g. --stop-timeout 10`);
      const [{ readCheckpoint }, { resolve }, { existsSync }] = await Promise.all([import('../sandbox/ops/restore.js'), import('node:path'), import('node:fs')]);
      const ck = await readCheckpoint(dir);
      const stateDir = resolve(resolveStateDir(g.stateDir));
      const agent = ck.meta.agent;
      if (agent !== undefined) {
        if (stateDir !== ck.meta.stateDir) throw new UsageError(`the checkpoint's identity is in state dir ${ck.meta.stateDir}; restore it with --state-dir ${ck.meta.stateDir}`);
        const { credentialsPath } = await import('../enroll/credentials.js');
        if (!existsSync(credentialsPath(stateDir, agent))) throw new UsageError(`the identity of agent ${agent} is gone from ${stateDir} (credentials/${agent}.json); the checkpoint cannot continue with its address`);
      }
      requireRoot();
      const [{ createLogger }, { runSandbox }, { enrollAndPrepare }] = await Promise.all([import('../log.js'), import('../sandbox/run.js'), import('../sandbox/enrolled.js')]);
      const log = createLogger({ level: g.debug ? 'debug' : undefined });
      const enrolled = agent === undefined ? undefined : await enrollAndPrepare({ stateDir, name: agent, controlPlaneUrl: o.controlPlane as string | undefined, advertiseHost: o.advertise as string, log });
      if (enrolled) console.error(`lattice: reusing ${enrolled.credentials.namespace}/${enrolled.credentials.name} at ${enrolled.credentials.address.ipv4} (${enrolled.credentials.address.ipv6})`);
      try {
        process.exitCode = await runSandbox({
          stateDir,
          name: (o.name as string | undefined) ?? ck.meta.name,
          keep: Boolean(o.keep),
          stopGraceMs: grace * 1000,
          debug: g.debug,
          log,
          rootfs: ck.spec.root.path,
          args: ck.spec.process.args,
          restore: { imagePath: ck.imagePath, spec: ck.spec },
          // runsc's restore wants each stdio fd of the kind it had at checkpoint where that was a socket (a
          // launcher's pipes are socketpairs); a socket also stands in for /dev/null, a file or a pipe.
          stdio: { stdin: 'pipe', stdout: 'pipe' },
          ...(enrolled
            ? {
                network: enrolled.network,
                hostUds: true,
                stopWhen: enrolled.revoked,
                onStarted: (r) => enrolled.record({ type: 'sandbox.started', sandboxId: r.id }),
                onExited: (r, code, cause) => enrolled.record({ type: 'sandbox.exited', sandboxId: r.id, code, ...(cause ? { reason: cause } : {}) }),
              }
            : {}),
        });
      } finally {
        await enrolled?.close();
      }
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
