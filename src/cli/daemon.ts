import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { resolveStateDir } from '../state.js';
import { requireRoot } from '../sandbox/inputs.js';
import { globalOpts } from './run.js';
import { stopSignal } from './stop-signal.js';

/** The gid of `group` (a name in the host's /etc/group, or a number). */
async function groupId(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  const line = (await readFile('/etc/group', 'utf8')).split('\n').find((l) => l.split(':')[0] === group);
  const gid = line?.split(':')[2];
  if (gid === undefined || !/^\d+$/.test(gid)) throw new UsageError(`group ${group} is not in /etc/group; create it (groupadd ${group}) or give a gid`);
  return Number(gid);
}

/** `--pool` / `pool set` values, paths made absolute here (the daemon checks the rest). */
async function parsePools(values: string[], minSize: number) {
  const [{ parsePoolSpec }, { resolve }] = await Promise.all([import('../daemon/pool.js'), import('node:path')]);
  return values.map((v) => parsePoolSpec(v, (p) => resolve(p), minSize));
}

/** The running daemon's client (`--socket`, else the state dir's), or a usage error saying how to start one. */
async function runningDaemon(command: Command, socketFlag: string | undefined) {
  const { LatticeClient, defaultSocket, socketAnswers } = await import('../client/index.js');
  const g = globalOpts(command);
  const socket = socketFlag ?? defaultSocket(resolveStateDir(g.stateDir));
  if (!(await socketAnswers(socket))) throw new UsageError(`no daemon answers on ${socket}; start it with: lattice${g.stateDir ? ` --state-dir ${g.stateDir}` : ''} daemon`);
  return new LatticeClient({ socket });
}

/** One line per pool: what it is, its size, parked and starting members. */
function poolLine(p: import('../client/index.js').PoolState): string {
  const source = p.rootfs ?? (p.image !== undefined ? `image ${p.image}` : p.imageArchive !== undefined ? `image-archive ${p.imageArchive}` : `oci-layout ${p.ociLayout}`);
  const limits = [p.memory && `memory=${p.memory}`, p.cpus && `cpus=${p.cpus}`, p.pidsLimit && `pids-limit=${p.pidsLimit}`, p.tmpSize && `tmp-size=${p.tmpSize}`].filter(Boolean);
  const net = p.policy === null ? 'no network' : `policy ${p.policy}`;
  return `${source} (${[net, ...limits].join(', ')}): size ${p.size}, ${p.warm.length} parked, ${p.starting} starting`;
}

/** `lattice daemon pool set|ls`: the running daemon's warm pools, changed at run time. */
function registerPool(daemon: Command): void {
  const pool = daemon.command('pool').description("the running daemon's warm pools (see README, \"Warm pool\")");
  pool
    .command('set')
    .description('make a pool, change its size or remove it (size 0); returns once the parked sandboxes beyond the size have ended. Stored in <state>/daemon-pools.json: a restarted daemon has it back')
    .argument('<SPEC...>', 'ROOTFS[:POLICY]=N or KEY=VALUE,...,size=N (keys: rootfs, image, image-archive, oci-layout, policy, memory, cpus, pids-limit, tmp-size)')
    .option('--socket <path>', "the daemon's Unix socket (default: <state>/daemon.sock)")
    .option('--json', 'print the pools set as JSON')
    .action(async (values: string[], o: { socket?: string; json?: boolean }, command: Command) => {
      const specs = await parsePools(values, 0);
      const client = await runningDaemon(command, o.socket);
      const done = [];
      for (const spec of specs) done.push(await client.setPool(spec));
      if (o.json) return console.log(JSON.stringify(done));
      for (const p of done) console.log(p.size === 0 ? `removed: ${poolLine(p)}` : poolLine(p));
    });
  pool
    .command('ls')
    .description('the pools, their sizes, parked and starting sandboxes')
    .option('--socket <path>', "the daemon's Unix socket (default: <state>/daemon.sock)")
    .option('--json', 'print GET /v1/pool as JSON')
    .action(async (o: { socket?: string; json?: boolean }, command: Command) => {
      const pools = await (await runningDaemon(command, o.socket)).pool();
      if (o.json) return console.log(JSON.stringify(pools));
      if (pools.length === 0) return console.error('lattice: no warm pool; add one with lattice daemon pool set SPEC');
      for (const p of pools) console.log(poolLine(p));
    });
}

/** Register `lattice daemon`: the resident launcher serving the sandbox API on a Unix socket. */
export function registerDaemon(program: Command): void {
  const daemon = program
    .command('daemon')
    .description('resident launcher: owns sandboxes and their networks, serves the sandbox API on a Unix socket')
    .option('--socket <path>', 'Unix socket of the API (default: <state>/daemon.sock; also $LATTICE_DAEMON_SOCKET)')
    .option('--group <group>', 'members of this group may use the socket (mode 0660); default: root only (0600)')
    .option(
      '--pool <SPEC>',
      'keep sandboxes started: ROOTFS[:POLICY]=N, or KEY=VALUE,...,size=N with rootfs|image|image-archive|oci-layout, policy, memory, cpus, pids-limit, tmp-size; matching requests take one (repeatable). Pools set at run time (pool set) are stored in <state>/daemon-pools.json and restored at start; a --pool flag for the same pool wins over the stored size',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .action(async (o: { socket?: string; group?: string; pool: string[] }, command: Command) => {
      const g = globalOpts(command);
      requireRoot();
      const stateDir = resolveStateDir(g.stateDir);
      const [{ startDaemon }, { defaultSocket }, { createLogger }, { removeRunscRecord }, { readFileSync }] = await Promise.all([
        import('../daemon/server.js'),
        import('../client/index.js'),
        import('../log.js'),
        import('../sandbox/run.js'),
        import('node:fs'),
      ]);
      const { PoolStore, poolStorePath, mergePools } = await import('../daemon/pool-store.js');
      const { formatPoolSpec } = await import('../daemon/pool.js');
      // Flags are checked before the store is read: a bad --pool stops the start whatever the store holds.
      const flags = await parsePools(o.pool, 1);
      const { store, stored } = await PoolStore.open(poolStorePath(stateDir));
      for (const w of stored.warnings) console.error(`lattice: warning: ${w}`);
      const pools = mergePools(flags, stored.specs);
      for (const { flag, storedSize } of pools.overridden) console.error(`lattice: warm pool ${formatPoolSpec(flag)}: the --pool flag wins over the size ${storedSize} a pool set stored`);
      const socket = o.socket ?? defaultSocket(stateDir);
      const gid = o.group === undefined ? undefined : await groupId(o.group);
      const log = createLogger({ level: g.debug ? 'debug' : undefined });
      const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
      const running = await startDaemon({
        stateDir,
        socket,
        gid,
        version,
        log,
        pools: pools.flags,
        restoredPools: pools.restored,
        poolStore: store,
        cleaners: {
          runsc: async () => removeRunscRecord,
          docker: async () => (await import('../docker/engine.js')).dockerRecordCleaner(),
        },
      });
      if (running.reaped.length) console.error(`lattice: reaped ${running.reaped.length} sandbox(es) of a daemon that died: ${running.reaped.join(' ')}`);
      for (const { spec, reason } of running.skippedPools) {
        console.error(`lattice: warning: stored warm pool ${formatPoolSpec(spec)} skipped: ${reason}; remove it with: lattice daemon pool set ${formatPoolSpec(spec, 0)}`);
      }
      console.error(`lattice: daemon ${process.pid} listening on ${socket}`);
      for (const p of running.supervisor.poolState()) console.error(`lattice: warm pool ${poolLine(p)}: filling`);
      await stopSignal();
      console.error('lattice: daemon stopping its sandboxes');
      await running.close();
    });
  registerPool(daemon);
}
