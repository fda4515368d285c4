#!/usr/bin/env node
import { Command } from 'commander';
import { runCli } from './run.js';
import { registerControlPlane } from './controlplane.js';
import { registerAdmin } from './admin.js';
import { registerSandbox } from './sandbox.js';
import { registerDoctor } from './doctor.js';
import { registerAudit } from './audit.js';
import { registerWg } from './wg.js';
import { registerRunsc } from './runsc.js';

const program = new Command('lattice')
  .description('Run AI agents inside gVisor with a zero-trust WireGuard network identity')
  .option('--state-dir <dir>', 'state directory (default: $LATTICE_STATE_DIR or /var/lib/lattice)')
  .option('--debug', 'print stack traces and debug logs');

// Each command group registers itself; one line each.
registerSandbox(program);
registerDoctor(program);
registerControlPlane(program);
registerAdmin(program);
registerAudit(program);
registerWg(program);
registerRunsc(program);

await runCli(program, process.argv);
