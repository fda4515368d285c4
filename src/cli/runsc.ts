import type { Command } from 'commander';
import { UsageError } from '../errors.js';

/** Register the `runsc` helper commands on `program`. */
export function registerRunsc(program: Command): void {
  const runsc = program.command('runsc').description('runsc integration');
  runsc
    .command('install')
    .description('register lattice\'s runsc wrapper (with the gVisor 10704 workaround) as a Docker runtime')
    .option('--docker', 'merge the runtime into /etc/docker/daemon.json and reload dockerd')
    .option('--name <name>', 'runtime name', 'lattice-runsc')
    .option('--daemon-json <file>', 'daemon.json to edit', '/etc/docker/daemon.json')
    .action(async (o: { docker?: boolean; name: string; daemonJson: string }) => {
      if (!o.docker) throw new UsageError('say where to install: lattice runsc install --docker');
      const { installDockerRuntime } = await import('../docker/runtime.js');
      const r = await installDockerRuntime({ name: o.name, daemonJson: o.daemonJson });
      console.log(
        r.changed
          ? `registered runtime "${o.name}" in ${o.daemonJson}${r.reloaded ? '; dockerd reloaded' : '; dockerd not running (it will read it at start)'}`
          : `runtime "${o.name}" already registered in ${o.daemonJson}`,
      );
    });
}
