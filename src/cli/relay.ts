import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { createLogger } from '../log.js';
import { decodeRelaySecret, newRelaySecret, relayCredential } from '../nat/relay-credential.js';
import { parseRelayUrl } from '../nat/relay-client.js';
import { RelayServer } from '../nat/relay-server.js';
import { globalOpts } from './run.js';
import { stopSignal } from './stop-signal.js';

/**
 * `lattice relay secret|credential|serve`: the TCP relay (src/nat/relay-server.ts), the last-resort path
 * between peers behind NATs. The relay's secret stays with its operator; each peer gets only the
 * credential for its own id (`relay credential ID`, given to `sandbox start --relay-token`), so no peer
 * can claim another's id.
 */
async function loadSecret(o: { secretFile?: string }): Promise<Uint8Array> {
  let text: string | undefined;
  if (o.secretFile !== undefined) {
    try {
      text = await readFile(o.secretFile, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read --secret-file ${o.secretFile}: ${(err as Error).message}`, { cause: err });
    }
  } else text = process.env.LATTICE_RELAY_SECRET;
  if (text === undefined) throw new UsageError('no relay secret: pass --secret-file FILE or set LATTICE_RELAY_SECRET (make one with `lattice relay secret`)');
  const secret = decodeRelaySecret(text);
  if (!secret) throw new UsageError('the relay secret is not base64 of at least 32 bytes; make one with `lattice relay secret`');
  return secret;
}

/** Register `relay secret|credential|serve` on `program`. */
export function registerRelay(program: Command): void {
  const g = program.command('relay').description('the TCP relay for peers behind NATs (per-peer credentials)');
  g.command('secret')
    .description('print a new relay secret (keep it with the relay; never give it to a peer)')
    .action(() => {
      process.stdout.write(`${newRelaySecret()}\n`);
    });
  g.command('credential')
    .description("print the relay credential for one peer id (the sandbox's name): its --relay-token")
    .argument('<id>', 'peer id, as the peer says it on the relay (a sandbox: its --name)')
    .option('--secret-file <file>', 'the relay secret (default: $LATTICE_RELAY_SECRET)')
    .action(async (id: string, o: { secretFile?: string }) => {
      if (Buffer.byteLength(id) === 0 || Buffer.byteLength(id) > 255) throw new UsageError('a relay peer id is 1 to 255 bytes');
      process.stdout.write(`${relayCredential(await loadSecret(o), id)}\n`);
    });
  g.command('serve')
    .description('run the relay in the foreground until SIGINT/SIGTERM; refused claims are logged as warnings')
    .requiredOption('--listen <host:port>', 'address to listen on, e.g. 0.0.0.0:4443')
    .option('--secret-file <file>', 'the relay secret (default: $LATTICE_RELAY_SECRET)')
    .action(async (o: { listen: string; secretFile?: string }, cmd: Command) => {
      let addr: { host: string; port: number };
      try {
        addr = parseRelayUrl(o.listen);
      } catch {
        throw new UsageError(`--listen ${o.listen} is not HOST:PORT`);
      }
      const secret = await loadSecret(o);
      const log = createLogger({ name: 'relay', level: globalOpts(cmd).debug ? 'debug' : undefined });
      const srv = await RelayServer.listen({
        host: addr.host,
        port: addr.port,
        secret,
        onEvent: (e) => log.warn({ event: `relay.${e.kind}`, claimedId: e.claimedId, taken: e.taken, remote: e.remote }, 'relay claim refused: credential is not this id\'s'),
      });
      process.stdout.write(`relay listening on ${srv.url}\n`);
      await stopSignal();
      log.info({ stats: srv.stats }, 'relay stopping');
      await srv.close();
    });
}
