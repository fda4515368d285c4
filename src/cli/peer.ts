/**
 * `lattice peer add-static`: a plain WireGuard host (wireguard-go, wg-quick) joins the directory as a
 * static peer (#17 item 6), over the admin HTTP API (POST /api/v1/agent-isolation/static-peers). Wiring only.
 */
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { callApi, withApiOptions, type ApiOpts } from './api.js';

/** Register `peer add-static` on the CLI program. */
export function registerPeer(program: Command): void {
  const peer = program.command('peer').description('peers that run no lattice (static WireGuard peers)');
  withApiOptions(
    peer
      .command('add-static')
      .description('add a hand-configured WireGuard host to the directory; prints its overlay addresses')
      .argument('<name>', 'peer name (a DNS label): <name>.<namespace>.lattice')
      .requiredOption('--namespace <ns>', 'namespace of the peer')
      .requiredOption('--public-key <key>', 'its WireGuard public key (`wg pubkey`)')
      .option('--endpoint <host:port>', 'where its WireGuard UDP socket listens (omit if it only initiates)')
      .option('--json', 'print JSON'),
  ).action(async (name: string, o: ApiOpts & { namespace: string; publicKey: string; endpoint?: string; json?: boolean }, command: Command) => {
    if (o.endpoint !== undefined && !/^[^\s]+:\d{1,5}$/.test(o.endpoint)) throw new UsageError(`--endpoint ${o.endpoint} is not host:port`);
    const r = await callApi<{ name: string; namespace: string; ipv4: string; ipv6: string }>(command, o, 'POST', '/api/v1/agent-isolation/static-peers', {
      body: { namespace: o.namespace, name, publicKey: o.publicKey, ...(o.endpoint ? { endpoint: o.endpoint } : {}) },
    });
    if (o.json) console.log(JSON.stringify(r, null, 2));
    else console.log(`${r.name}.${r.namespace}.lattice: Address = ${r.ipv4}/32, ${r.ipv6}/128 (configure these on its WireGuard interface; peers: see \`lattice agent ls\`)`);
  });
}
