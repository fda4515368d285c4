#!/usr/bin/env node
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { runCli } from './run.js';

type Register = (program: Command) => void;

/**
 * Each command group registers itself from its own module. Only the group being run is loaded
 * (control-plane code pulls in NATS and jose, wg pulls in sodium and koffi): a sandbox starts
 * without paying for them. Help without a group loads them all.
 */
const GROUPS: Record<string, () => Promise<Register>> = {
  sandbox: () => import('./sandbox.js').then((m) => m.registerSandbox),
  doctor: () => import('./doctor.js').then((m) => m.registerDoctor),
  'control-plane': () => import('./controlplane.js').then((m) => m.registerControlPlane),
  admin: () => import('./admin.js').then((m) => m.registerAdmin),
  audit: () => import('./audit.js').then((m) => m.registerAudit),
  wg: () => import('./wg.js').then((m) => m.registerWg),
  runsc: () => import('./runsc.js').then((m) => m.registerRunsc),
  approvals: () => import('./approvals.js').then((m) => m.registerApprovals),
  mcp: () => import('./mcp.js').then((m) => m.registerMcp),
  up: () => import('./up.js').then((m) => m.registerUp),
  peer: () => import('./peer.js').then((m) => m.registerPeer),
  relay: () => import('./relay.js').then((m) => m.registerRelay),
  route: () => import('./route.js').then((m) => m.registerRoute),
  namespace: () => import('./namespace.js').then((m) => m.registerNamespace),
  daemon: () => import('./daemon.js').then((m) => m.registerDaemon),
};
const MODULE_OF: Record<string, keyof typeof GROUPS> = { gc: 'sandbox', token: 'admin', agent: 'admin', policy: 'admin', down: 'up', status: 'up' };

/** The first word of argv that is not a global option or its value. */
function commandWord(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--state-dir') i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

const program = new Command('lattice')
  .description('Run AI agents inside gVisor with a zero-trust WireGuard network identity')
  .option('--state-dir <dir>', 'state directory (default: $LATTICE_STATE_DIR or /var/lib/lattice)')
  .option('--debug', 'print stack traces and debug logs')
  .option('--verbose', 'say on stderr whether a command used the daemon or worked alone')
  .version(packageVersion(), '-V, --version', 'print the version of lattice');

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

const word = commandWord(process.argv.slice(2));
const group = word === undefined ? undefined : (MODULE_OF[word] ?? (word in GROUPS ? word : undefined));
const versionOnly = word === undefined && process.argv.slice(2).some((a) => a === '-V' || a === '--version');
const loaders = group ? [GROUPS[group]!] : versionOnly ? [] : Object.values(GROUPS);
for (const register of await Promise.all(loaders.map((load) => load()))) register(program);

await runCli(program, process.argv);
