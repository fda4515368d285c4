import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { globalOpts } from './run.js';
import { UsageError } from '../errors.js';
import { createLogger } from '../log.js';
import { resolveStateDir } from '../state.js';
import { ConfigError, parseConfig } from '../wg/config.js';
import { defaultCrypto } from '../wg/crypto.js';
import { generatePrivateKey, KeyFormatError, publicKeyOf } from '../wg/keys.js';
import { formatStatus, readStatuses, wgUp } from './wg-up.js';
import { stopSignal } from './stop-signal.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Register `lattice wg` (genkey, pubkey, up, ...: a userspace WireGuard peer) on the CLI program. */
export function registerWg(program: Command): void {
  const wg = program.command('wg').description('userspace WireGuard peer (interoperates with wg(8) and wireguard-go)');

  wg.command('genkey')
    .description('print a new private key (base64, as `wg genkey`)')
    .action(() => {
      process.stdout.write(`${generatePrivateKey(defaultCrypto)}\n`);
    });

  wg.command('pubkey')
    .description('read a private key on stdin, print its public key (as `wg pubkey`)')
    .action(async () => {
      try {
        process.stdout.write(`${publicKeyOf(defaultCrypto, await readStdin())}\n`);
      } catch (err) {
        if (err instanceof KeyFormatError) throw new UsageError(`stdin: ${err.message}`);
        throw err;
      }
    });

  wg.command('up')
    .description('run a userspace peer from a wg-quick style CONFIG in the foreground until SIGINT/SIGTERM')
    .argument('<config>', 'wg-quick style file: [Interface] PrivateKey, Address, ListenPort, MTU; [Peer] ...')
    .option('--tun <name>', 'TUN interface name (default: the config file name without .conf)')
    .action(async (configPath: string, opts: { tun?: string }, cmd: Command) => {
      const g = globalOpts(cmd);
      let text: string;
      try {
        text = await readFile(configPath, 'utf8');
      } catch (err) {
        throw new UsageError(`cannot read ${configPath}: ${(err as Error).message}`, { cause: err });
      }
      let cfg;
      try {
        cfg = parseConfig(text);
      } catch (err) {
        if (err instanceof ConfigError) throw new UsageError(`${configPath}: ${err.message}`, { cause: err });
        throw err;
      }
      const ifname = opts.tun ?? basename(configPath).replace(/\.conf$/, '');
      const log = createLogger({ name: 'wg', level: g.debug ? 'debug' : undefined });
      const handle = await wgUp(cfg, { ifname, stateDir: resolveStateDir(g.stateDir), log });
      process.stderr.write(`lattice: ${handle.ifname} up, listening on UDP port ${handle.port} (UDP I/O: ${handle.udpOffload}; TUN offload: ${handle.tunOffload})\n`);
      await stopSignal();
      await handle.stop();
    });

  wg.command('show')
    .description('status of running `wg up` peers: endpoints, latest handshake, transfer')
    .argument('[interface]', 'only this interface')
    .option('--json', 'print JSON')
    .action(async (iface: string | undefined, opts: { json?: boolean }, cmd: Command) => {
      const all = await readStatuses(resolveStateDir(globalOpts(cmd).stateDir));
      const sel = iface ? all.filter((s) => s.interface === iface) : all;
      if (iface && sel.length === 0) throw new UsageError(`no running interface "${iface}"; start it with \`lattice wg up\``);
      process.stdout.write(opts.json ? `${JSON.stringify(sel, null, 2)}\n` : formatStatus(sel));
    });
}
