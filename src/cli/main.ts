#!/usr/bin/env node
import { Command } from 'commander';
import { runCli } from './run.js';
import { registerSandbox } from './sandbox.js';
import { registerDoctor } from './doctor.js';

const program = new Command('lattice')
  .description('Run AI agents inside gVisor with a zero-trust WireGuard network identity')
  .option('--state-dir <dir>', 'state directory (default: $LATTICE_STATE_DIR or /var/lib/lattice)')
  .option('--debug', 'print stack traces and debug logs');

// Each command group registers itself; one line each.
registerSandbox(program);
registerDoctor(program);

await runCli(program, process.argv);
