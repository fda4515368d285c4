import type { Command } from 'commander';

/** Register `doctor` (checks of the host's prerequisites) on `program`. */
export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check runsc, kernel features, root and the components lattice drives')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const { runChecks } = await import('../doctor.js');
      const checks = await runChecks();
      if (o.json) console.log(JSON.stringify(checks, null, 2));
      else
        for (const c of checks) console.log(`${c.ok ? 'ok     ' : c.optional ? 'WARN   ' : 'MISSING'}  ${c.name.padEnd(24)} ${c.detail}${c.ok || !c.fix ? '' : `  -> ${c.fix}`}`);
      // dockerd and the host-egress checks are optional for the core path; everything else is required.
      if (checks.some((c) => !c.ok && !c.optional && c.name !== 'dockerd')) process.exitCode = 1;
    });
}
