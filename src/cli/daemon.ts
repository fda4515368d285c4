import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { resolveStateDir } from '../state.js';
import { requireRoot } from '../sandbox/inputs.js';
import { globalOpts } from './run.js';

/** The gid of `group` (a name in the host's /etc/group, or a number). */
async function groupId(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  const line = (await readFile('/etc/group', 'utf8')).split('\n').find((l) => l.split(':')[0] === group);
  const gid = line?.split(':')[2];
  if (gid === undefined || !/^\d+$/.test(gid)) throw new UsageError(`group ${group} is not in /etc/group; create it (groupadd ${group}) or give a gid`);
  return Number(gid);
}

/** `--pool` values, checked before anything starts: a directory rootfs with /bin/sh, a policy file that exists. */
async function checkPools(values: string[]) {
  const [{ parsePoolSpec }, { resolve }, { lstat, stat }] = await Promise.all([import('../daemon/pool.js'), import('node:path'), import('node:fs/promises')]);
  const specs = values.map((v) => parsePoolSpec(v, (p) => resolve(p)));
  for (const s of specs) {
    if (!(await stat(s.rootfs).catch(() => undefined))?.isDirectory()) throw new UsageError(`--pool: ${s.rootfs} is not a directory; a pool needs an unpacked root filesystem`);
    if (!(await lstat(`${s.rootfs}/bin/sh`).catch(() => undefined))) throw new UsageError(`--pool: ${s.rootfs} has no /bin/sh, which a parked sandbox runs until a request takes it`);
    if (s.policy !== undefined && !(await stat(s.policy).catch(() => undefined))?.isFile()) throw new UsageError(`--pool: policy ${s.policy} is not a file`);
  }
  return specs;
}

/** Register `lattice daemon`: the resident launcher serving the sandbox API on a Unix socket. */
export function registerDaemon(program: Command): void {
  program
    .command('daemon')
    .description('resident launcher: owns sandboxes and their networks, serves the sandbox API on a Unix socket')
    .option('--socket <path>', 'Unix socket of the API (default: <state>/daemon.sock; also $LATTICE_DAEMON_SOCKET)')
    .option('--group <group>', 'members of this group may use the socket (mode 0660); default: root only (0600)')
    .option(
      '--pool <ROOTFS[:POLICY]=N>',
      'keep N sandboxes of root filesystem ROOTFS (a directory with /bin/sh) started, without network or under host-egress POLICY; matching requests take one (repeatable)',
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
      const pools = await checkPools(o.pool);
      const socket = o.socket ?? defaultSocket(stateDir);
      const gid = o.group === undefined ? undefined : await groupId(o.group);
      const log = createLogger({ level: g.debug ? 'debug' : undefined });
      const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
      const daemon = await startDaemon({
        stateDir,
        socket,
        gid,
        version,
        log,
        pools,
        cleaners: {
          runsc: async () => removeRunscRecord,
          docker: async () => (await import('../docker/engine.js')).dockerRecordCleaner(),
        },
      });
      if (daemon.reaped.length) console.error(`lattice: reaped ${daemon.reaped.length} sandbox(es) of a daemon that died: ${daemon.reaped.join(' ')}`);
      console.error(`lattice: daemon ${process.pid} listening on ${socket}`);
      for (const p of pools) console.error(`lattice: warm pool of ${p.size} for ${p.rootfs}${p.policy ? ` under ${p.policy}` : ' (no network)'}: filling`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      console.error('lattice: daemon stopping its sandboxes');
      await daemon.close();
    });
}
