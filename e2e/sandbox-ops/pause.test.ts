/**
 * `lattice sandbox pause|resume` (issue 19 item 4): a paused sandbox's counter stops advancing, a resumed
 * one continues from where it stopped. No sleeps: "later" is a later observable event, the host's own
 * counter file written by a host loop, advanced by several ticks between the two reads.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { busyboxRootfs, lattice, requireBinary, requireRoot, tempDir, waitFor } from '../support/env.js';
import { startBox, type Box } from './helpers.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let stateDir: string;
let box: Box;
const name = `ops-pause-${randomBytes(3).toString('hex')}`;

beforeAll(async () => {
  requireRoot();
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-pause');
  stateDir = join(work.path, 'state');
  box = await startBox(stateDir, await busyboxRootfs(work.path), name);
});

afterAll(async () => {
  await box?.stop();
  await work?.remove();
});

describe('sandbox pause / resume', () => {
  it('pause stops the counter; resume continues it from where it stopped', async () => {
    await waitFor(() => box.printed() > 0, 60_000, 'the counter on stdout');
    const p = await lattice(stateDir, ['sandbox', 'pause', name]);
    expect(p.exitCode, String(p.stderr)).toBe(0);
    // Later events than the pause: each `sandbox ls` is a process of its own that takes a while. Output the
    // loop wrote before the freeze may still be in the pipe at the first one; none may arrive after it.
    const ls = () => lattice(stateDir, ['sandbox', 'ls']);
    await ls();
    const frozen = box.printed();
    for (let i = 0; i < 3; i++) await ls();
    expect(box.printed()).toBe(frozen);
    const r = await lattice(stateDir, ['sandbox', 'resume', name]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    await waitFor(() => box.printed() > frozen + 3, 60_000, 'the counter to advance after resume');
    // It continued: the numbers go on from the frozen count, not from 1 again.
    expect(await box.count()).toBeGreaterThan(frozen);
  });
});
