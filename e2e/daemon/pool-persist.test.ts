/**
 * Warm pools set at run time survive a daemon restart (real runsc): `pool set` / PUT /v1/pool are stored in
 * <state>/daemon-pools.json (0600); a daemon stopped with SIGTERM and started again without flags has the
 * pools back and fills them; a --pool flag wins over the stored size; `size=0` removes the entry; a damaged
 * file or a stored pool that no longer validates is one warning line and the daemon still starts.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ourContainers } from '../support/daemon-leftovers.js';
import { requireBinary, requireRoot, tempDir, busyboxRootfs, lattice, waitFor } from '../support/env.js';
import { openapiAjv, startTestDaemon, type TestDaemon } from '../support/test-daemon.js';
import { LatticeClient, socketAnswers, type PoolState } from '../../src/client/index.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;
let socket: string;
let store: string;
let daemon: TestDaemon | undefined;
let c: LatticeClient;

const { ajv } = openapiAjv();

async function start(flags: string[] = []): Promise<void> {
  daemon = await startTestDaemon(stateDir, socket, flags);
}

/** SIGTERM the daemon; it must exit 0 with nothing left running. Its stderr. */
async function stop(): Promise<string> {
  daemon!.run.kill('SIGTERM');
  const r = await daemon!.run;
  expect(r.signal, daemon!.stderr().slice(-2000)).toBeUndefined();
  expect(r.exitCode, daemon!.stderr().slice(-2000)).toBe(0);
  expect(await ourContainers(stateDir)).toEqual([]);
  const err = daemon!.stderr();
  daemon = undefined;
  return err;
}

async function pools(): Promise<PoolState[]> {
  const p = await c.pool();
  for (const x of p) expect(ajv.validate({ $ref: 'openapi#/components/schemas/Pool' }, x), ajv.errorsText()).toBe(true);
  return p;
}
const shape = (p: PoolState[]) => p.map((x) => ({ rootfs: x.rootfs, memory: x.memory, size: x.size }));
const stored = async () => JSON.parse(await readFile(store, 'utf8')) as { format: string; pools: unknown[] };

async function full(): Promise<PoolState[]> {
  let last: PoolState[] = [];
  await waitFor(async () => (last = await pools()).every((p) => p.warm.length === p.size), 120_000, 'the warm pools are full');
  return last;
}

beforeAll(async () => {
  requireRoot();
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-pool-persist');
  rootfs = await busyboxRootfs(work.path);
  stateDir = join(work.path, 'state');
  socket = join(stateDir, 'daemon.sock');
  store = join(stateDir, 'daemon-pools.json');
  await execa('mkdir', ['-p', '-m', '700', stateDir]);
  c = new LatticeClient({ socket });
  await start();
});

afterAll(async () => {
  if (daemon) {
    daemon.run.kill('SIGTERM');
    await daemon.run;
  }
  await lattice(stateDir, ['gc', '--kept']);
  await work?.remove();
});

describe('warm pools across daemon restarts (real runsc)', () => {
  it('pools set at run time (CLI and API) are stored 0600 and come back after a SIGTERM restart without flags, and fill', async () => {
    const r = await lattice(stateDir, ['daemon', 'pool', 'set', `${rootfs}=1`]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    await c.setPool({ rootfs, memory: '128m', size: 1 });
    const before = await full();
    expect((await stat(store)).mode & 0o777).toBe(0o600);
    expect(await stored()).toEqual({ format: 'lattice-daemon-pools/1', pools: [{ rootfs, size: 1 }, { rootfs, memory: '128m', size: 1 }] });

    await stop();
    await start();
    expect(shape(await pools())).toEqual([
      { rootfs, memory: undefined, size: 1 },
      { rootfs, memory: '128m', size: 1 },
    ]);
    const after = await full();
    const parked = after.flatMap((p) => p.warm);
    expect(parked).toHaveLength(2);
    // New members: the old ones ended with the old daemon.
    for (const id of before.flatMap((p) => p.warm)) expect(parked).not.toContain(id);
    // A request takes a restored member.
    const taken = await c.run({ rootfs, cmd: ['sh', '-c', 'echo restored'] });
    expect(taken.output.toString()).toBe('restored\n');
    expect(after.find((p) => p.memory === undefined)!.warm).toContain(taken.sandbox.id);
    await c.remove(taken.sandbox.id);
  });

  it('a --pool flag wins over the stored size of its pool, and is not stored itself', async () => {
    await stop();
    await start(['--pool', `${rootfs}=2`]);
    expect(daemon!.stderr()).toContain(`lattice: warm pool rootfs=${rootfs},size=2: the --pool flag wins over the size 1 a pool set stored`);
    expect(shape(await pools())).toEqual([
      { rootfs, memory: undefined, size: 2 },
      { rootfs, memory: '128m', size: 1 },
    ]);
    expect((await stored()).pools).toEqual([{ rootfs, size: 1 }, { rootfs, memory: '128m', size: 1 }]);
    await stop();
    await start();
    expect(shape(await pools())).toEqual([
      { rootfs, memory: undefined, size: 1 },
      { rootfs, memory: '128m', size: 1 },
    ]);
  });

  it('pool set ... size=0 removes the stored entry: after a restart the pool is gone', async () => {
    const r = await lattice(stateDir, ['daemon', 'pool', 'set', `rootfs=${rootfs},memory=128M,size=0`]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect((await stored()).pools).toEqual([{ rootfs, size: 1 }]);
    await c.setPool({ rootfs, size: 0 });
    expect((await stored()).pools).toEqual([]);
    await stop();
    await start();
    expect(await pools()).toEqual([]);
  });

  it('a damaged store file: the daemon starts with one warning line and no stored pool; the next pool set replaces the file', async () => {
    await stop();
    await writeFile(store, '{"format":"lattice-daemon-pools/1","pools":[{"rootfs":', { mode: 0o600 });
    await start();
    const warnings = daemon!.stderr().split('\n').filter((l) => l.startsWith('lattice: warning:'));
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`^lattice: warning: ${store} is not JSON .*; its pools are not restored`)) as unknown]);
    expect(await pools()).toEqual([]);
    await c.setPool({ rootfs, size: 1 });
    expect((await stored()).pools).toEqual([{ rootfs, size: 1 }]);
  });

  it('a stored pool that no longer validates (source gone, policy unparsable) is one warning and skipped; the others start; it stays stored', async () => {
    const gone = join(work.path, 'gone-rootfs');
    const badPolicy = join(work.path, 'bad-policy.yaml');
    await writeFile(badPolicy, 'egress: [this is not: a policy');
    await stop();
    const pools0 = [{ rootfs: gone, size: 1 }, { rootfs, size: 1 }, { rootfs, policy: badPolicy, size: 1 }];
    await writeFile(store, JSON.stringify({ format: 'lattice-daemon-pools/1', pools: pools0 }), { mode: 0o600 });
    await start();
    const warnings = daemon!.stderr().split('\n').filter((l) => l.startsWith('lattice: warning:'));
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain(`stored warm pool rootfs=${gone},size=1 skipped: `);
    expect(warnings[0]).toMatch(new RegExp(`; remove it with: lattice daemon pool set rootfs=${gone},size=0$`));
    expect(warnings[1]).toContain(`stored warm pool rootfs=${rootfs},policy=${badPolicy},size=1 skipped: `);
    expect(shape(await pools())).toEqual([{ rootfs, memory: undefined, size: 1 }]);
    await full();
    expect((await stored()).pools).toEqual(pools0);
    // The command the warning gives removes it.
    const r = await lattice(stateDir, ['daemon', 'pool', 'set', `rootfs=${gone},size=0`]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect((await stored()).pools).toEqual(pools0.slice(1));
  });

  it('a bad --pool flag still stops the start, whatever the store holds', async () => {
    await stop();
    const r = await lattice(stateDir, ['daemon', '--pool', `${join(work.path, 'nowhere')}=1`]);
    expect(r.exitCode).not.toBe(0);
    expect(await socketAnswers(socket)).toBe(false);
    await start();
    expect(shape(await pools())).toEqual([{ rootfs, memory: undefined, size: 1 }]);
  });
});
