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

/** Register `lattice daemon`: the resident launcher serving the sandbox API on a Unix socket. */
export function registerDaemon(program: Command): void {
  program
    .command('daemon')
    .description('resident launcher: owns sandboxes and their networks, serves the sandbox API on a Unix socket')
    .option('--socket <path>', 'Unix socket of the API (default: <state>/daemon.sock; also $LATTICE_DAEMON_SOCKET)')
    .option('--group <group>', 'members of this group may use the socket (mode 0660); default: root only (0600)')
    .action(async (o: { socket?: string; group?: string }, command: Command) => {
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
        cleaners: {
          runsc: async () => removeRunscRecord,
          docker: async () => (await import('../docker/engine.js')).dockerRecordCleaner(),
        },
      });
      if (daemon.reaped.length) console.error(`lattice: reaped ${daemon.reaped.length} sandbox(es) of a daemon that died: ${daemon.reaped.join(' ')}`);
      console.error(`lattice: daemon ${process.pid} listening on ${socket}`);
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
