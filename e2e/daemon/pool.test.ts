/**
 * The daemon's warm pool with real runsc (`lattice daemon --pool ROOTFS=2 --pool ROOTFS:POLICY=1`):
 * a matching request takes a parked sandbox and gets its command's output and exit code; two requests at
 * once get two different sandboxes; a taken sandbox never comes back; the pool refills; kill -9 of the
 * daemon leaves no container, netns, cgroup or record of a parked sandbox. GET /v1/pool and the views
 * are validated against api/openapi.json.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cgroupsOf, netnsOf, ourContainers as leftovers } from '../support/daemon-leftovers.js';
import { CLI, requireBinary, requireRoot, tempDir, busyboxRootfs, lattice, waitFor } from '../support/env.js';
import { openapiAjv } from '../support/test-daemon.js';
import { DaemonApiError, LatticeClient, socketAnswers, type PoolState } from '../../src/client/index.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let policy: string;
let stateDir: string;
let socket: string;
let daemon: ResultPromise | undefined;
let c: LatticeClient;

const { ajv } = openapiAjv();
function expectSchema(name: 'Pool' | 'Sandbox', value: unknown): void {
  const ok = ajv.validate({ $ref: `openapi#/components/schemas/${name}` }, value);
  expect(ok, `${JSON.stringify(value)} is not a ${name} of api/openapi.json: ${ajv.errorsText()}`).toBe(true);
}

async function startDaemon(pool: boolean): Promise<void> {
  const flags = pool ? ['--pool', `${rootfs}=2`, '--pool', `${rootfs}:${policy}=1`] : [];
  daemon = execa(process.execPath, [CLI, '--state-dir', stateDir, 'daemon', ...flags], { reject: false, stdin: 'ignore' });
  await waitFor(() => socketAnswers(socket), 60_000, 'the daemon answers on its socket');
}

async function pools(): Promise<PoolState[]> {
  const p = await c.pool();
  for (const x of p) expectSchema('Pool', x);
  return p;
}
const poolOf = (all: PoolState[], withPolicy: boolean) => all.find((p) => (p.policy !== null) === withPolicy)!;

/** Wait until both pools are full; their parked ids. */
async function full(): Promise<{ plain: string[]; policed: string[] }> {
  let last: PoolState[] = [];
  await waitFor(async () => (last = await pools()).every((p) => p.warm.length === p.size), 120_000, 'the warm pools are full');
  return { plain: poolOf(last, false).warm, policed: poolOf(last, true).warm };
}

const ourContainers = () => leftovers(stateDir);

beforeAll(async () => {
  requireRoot();
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-pool');
  rootfs = await busyboxRootfs(work.path);
  policy = join(work.path, 'policy.json');
  await writeFile(policy, JSON.stringify({ version: 1, egress: [] }));
  stateDir = join(work.path, 'state');
  socket = join(stateDir, 'daemon.sock');
  await execa('mkdir', ['-p', '-m', '700', stateDir]);
  await startDaemon(true);
  c = new LatticeClient({ socket });
});

afterAll(async () => {
  daemon?.kill('SIGTERM');
  await daemon;
  await lattice(stateDir, ['gc', '--kept']);
  await work?.remove();
});

describe('the daemon warm pool (real runsc)', () => {
  it('parked sandboxes list as warm; a matching run takes one and gets its output, exit code, env and cwd', async () => {
    const { plain } = await full();
    const views = await c.list();
    for (const v of views) expectSchema('Sandbox', v);
    expect(views.filter((v) => plain.includes(v.id)).map((v) => v.status)).toEqual(['warm', 'warm']);

    const quote = `it's "quoted" $HOME`;
    const r = await c.run({ rootfs, cmd: ['sh', '-c', 'echo out; echo err >&2; echo "$FOO"; pwd; echo $$; exit 3'], env: [`FOO=${quote}`], cwd: '/tmp', name: 'pooled' });
    expect(plain).toContain(r.sandbox.id);
    expect(r.exitCode).toBe(3);
    // The command is the sandbox's process 1, as in a cold run.
    expect(r.output.toString()).toBe(`out\nerr\n${quote}\n/tmp\n1\n`);
    expectSchema('Sandbox', r.sandbox);
    expect(r.sandbox).toMatchObject({ name: 'pooled', status: 'exited (3)', running: false, command: expect.stringContaining('sh -c echo out') as unknown });
    expect(await ourContainers()).not.toContain(r.sandbox.id);
    await c.remove(r.sandbox.id);
  });

  it('two requests at once get two different sandboxes; a taken one never comes back; the pool refills', async () => {
    const { plain } = await full();
    const [a, b] = await Promise.all([c.create({ rootfs, cmd: ['sleep', '1000'] }), c.create({ rootfs, cmd: ['sleep', '1000'] })]);
    expect(a.id).not.toBe(b.id);
    expect(plain).toContain(a.id);
    expect(plain).toContain(b.id);
    expect([a.status, b.status]).toEqual(['running', 'running']);
    // A third request while both parked ones are taken (the refill may not be there yet) still runs.
    const third = await c.run({ rootfs, cmd: ['sh', '-c', 'echo third'] });
    expect(third.output.toString()).toBe('third\n');
    expect([a.id, b.id]).not.toContain(third.sandbox.id);

    const refilled = await full();
    expect(refilled.plain).toHaveLength(2);
    for (const id of [a.id, b.id, third.sandbox.id]) expect(refilled.plain).not.toContain(id);
    const stopped = await Promise.all([c.stop(a.id), c.stop(b.id)]);
    expect(stopped.map((s) => s.running)).toEqual([false, false]);
    expect(await ourContainers()).not.toContain(a.id);
    for (const id of [a.id, b.id, third.sandbox.id]) await c.remove(id);
  });

  it('stop of a taken sandbox sends its command SIGTERM first, as in a cold run (exit status of its trap)', async () => {
    const { plain } = await full();
    const trap = "trap 'echo term; exit 7' TERM; echo ready; while :; do sleep 1; done";
    const sb = await c.create({ rootfs, cmd: ['sh', '-c', trap], stopTimeoutSeconds: 600 });
    expect(plain).toContain(sb.id);
    let out = '';
    for await (const chunk of c.logs(sb.id, { follow: true })) if ((out += chunk.toString()).includes('ready')) break;
    // A stop that only came as SIGKILL after the stop timeout (600 s) would outlast the test's timeout.
    const stopped = await c.stop(sb.id);
    expect(stopped.exitCode).toBe(7);
    const chunks: Buffer[] = [];
    for await (const chunk of c.logs(sb.id)) chunks.push(chunk);
    // (busybox sh may also report its `sleep` child, which the signal reached too, as "Terminated".)
    expect(Buffer.concat(chunks).toString()).toMatch(/^ready\n(Terminated\n)?term\n$/);
    await c.remove(sb.id);
  });

  it('a request under the pool policy takes a sandbox whose network (netns, address) was ready', async () => {
    const { policed } = await full();
    expect(await netnsOf(policed[0]!)).toHaveLength(1);
    const r = await c.run({ rootfs, cmd: ['sh', '-c', 'cat /etc/resolv.conf'], network: { mode: 'host', policy } });
    expect(policed).toContain(r.sandbox.id);
    expect(r.exitCode).toBe(0);
    expect(r.output.toString()).toMatch(/^nameserver /);
    expect(r.sandbox.address).toMatch(/^\d+\.\d+\.\d+\.\d+\/32$/);
    // A request that does not match (another network) runs cold.
    const cold = await c.run({ rootfs, cmd: ['true'], network: { mode: 'host' } });
    expect(cold.exitCode).toBe(0);
    expect((await pools()).flatMap((p) => p.warm)).not.toContain(cold.sandbox.id);
    for (const id of [r.sandbox.id, cold.sandbox.id]) await c.remove(id);
  });

  it('a named request taken from the pool sees its name as hostname; an unnamed one its id', async () => {
    const { plain } = await full();
    const named = await c.run({ rootfs, name: 'web.1', cmd: ['hostname'] });
    const unnamed = await c.run({ rootfs, cmd: ['hostname'] });
    expect(plain).toContain(named.sandbox.id);
    expect(plain).toContain(unnamed.sandbox.id);
    expect(named.output.toString()).toBe('web-1\n');
    expect(unnamed.output.toString()).toBe(`${unnamed.sandbox.id}\n`);
    for (const id of [named.sandbox.id, unnamed.sandbox.id]) await c.remove(id);
  });

  it('pool set shrinks a pool at run time: the parked sandboxes beyond the size end (no container, netns, record), and it grows back', async () => {
    const { plain } = await full();
    const r = await lattice(stateDir, ['daemon', 'pool', 'set', `${rootfs}=1`, '--json']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const [shrunk] = JSON.parse(String(r.stdout)) as PoolState[];
    expectSchema('Pool', shrunk);
    expect(shrunk).toMatchObject({ rootfs, policy: null, size: 1 });
    expect(shrunk!.warm).toEqual([plain[0]]);
    const gone = plain[1]!;
    expect(await ourContainers()).not.toContain(gone);
    expect((await c.list()).map((v) => v.id)).not.toContain(gone);
    await waitFor(async () => (await cgroupsOf(gone)).length === 0, 60_000, 'the ended sandbox cgroup is gone');
    expect(poolOf(await pools(), false)).toMatchObject({ size: 1, warm: [plain[0]] });
    // The pool refills to its new size.
    const taken = await c.run({ rootfs, cmd: ['true'] });
    expect(taken.sandbox.id).toBe(plain[0]);
    await waitFor(async () => poolOf(await pools(), false).warm.length === 1, 120_000, 'the pool refilled to 1');
    await c.remove(taken.sandbox.id);
    expect(await c.setPool({ rootfs, size: 2 })).toMatchObject({ size: 2 });
    expect((await full()).plain).toHaveLength(2);
  });

  it('a pool with limits (made at run time) serves only requests with the same limits, which the sandbox has; size 0 removes it', async () => {
    const made = await c.setPool({ rootfs, memory: '96m', pidsLimit: '512', size: 1 });
    expectSchema('Pool', made);
    expect(made).toMatchObject({ rootfs, memory: '96m', pidsLimit: '512', policy: null, size: 1 });
    let limited: string[] = [];
    await waitFor(async () => (limited = (await pools()).find((p) => p.memory !== undefined)!.warm).length === 1, 120_000, 'the limited pool is full');
    await full();
    const plainBefore = poolOf(await pools(), false).warm;
    // Default limits: not the limited pool's sandbox.
    const plainRun = await c.run({ rootfs, cmd: ['true'] });
    expect(limited).not.toContain(plainRun.sandbox.id);
    expect(plainBefore).toContain(plainRun.sandbox.id);
    // The same limits, spelt otherwise: the limited pool's sandbox, and it has them.
    const r = await c.run({ rootfs, memory: '96M', pidsLimit: '512', cmd: ['sh', '-c', 'head -1 /proc/meminfo'] });
    expect(limited).toContain(r.sandbox.id);
    expect(r.output.toString()).toMatch(/^MemTotal:\s+98304 kB/);
    const [removed] = await Promise.all([c.setPool({ rootfs, memory: '96m', pidsLimit: '512', size: 0 })]);
    expect(removed).toMatchObject({ size: 0, warm: [] });
    await waitFor(async () => (await pools()).every((p) => p.memory === undefined), 120_000, 'the limited pool is gone');
    expect((await pools()).map((p) => p.size).sort()).toEqual([1, 2]);
    for (const id of [plainRun.sandbox.id, r.sandbox.id]) await c.remove(id);
  });

  it('bad pool changes are refused and change nothing', async () => {
    const before = (await pools()).map((p) => [p.rootfs, p.policy, p.size]);
    const empty = join(work.path, 'empty');
    await execa('mkdir', ['-p', empty]);
    for (const bad of [{ rootfs, image: 'x', size: 1 }, { size: 1 }, { rootfs, memory: 'lots', size: 1 }, { rootfs: empty, size: 1 }, { rootfs, size: 999 }]) {
      const err = await c.setPool(bad).then(
        () => undefined,
        (e: unknown) => e as DaemonApiError,
      );
      expect(err, JSON.stringify(bad)).toBeInstanceOf(DaemonApiError);
      expect(err!.status, JSON.stringify(bad)).toBe(400);
    }
    const cli = await lattice(stateDir, ['daemon', 'pool', 'set', `${rootfs}=two`]);
    expect(cli.exitCode).toBe(2);
    expect(String(cli.stderr)).toContain('size');
    expect((await pools()).map((p) => [p.rootfs, p.policy, p.size])).toEqual(before);
  });

  it('SIGTERM stops the daemon cleanly: it exits 0 after its parked sandboxes ended, leaving no container, netns, cgroup or record', async () => {
    // Regression: a signal listener that removed itself let execa's signal-exit re-raise SIGTERM, and the
    // daemon died at once, leaving everything behind.
    const { plain, policed } = await full();
    const parked = [...plain, ...policed];
    daemon!.kill('SIGTERM');
    const r = await daemon!;
    expect(r.signal, String(r.stderr).slice(-2000)).toBeUndefined();
    expect(r.exitCode).toBe(0);
    expect(String(r.stderr)).toContain('lattice: daemon stopping its sandboxes');
    expect(await ourContainers()).toEqual([]);
    for (const id of parked) {
      expect(await netnsOf(id)).toEqual([]);
      expect(await cgroupsOf(id)).toEqual([]);
    }
    await startDaemon(true);
    // Parked sandboxes ran nothing of anyone's: their records went with them.
    expect((await c.list()).filter((v) => parked.includes(v.id))).toEqual([]);
  });

  it('kill -9 of the daemon leaks no parked sandbox: no container, netns, cgroup or record left', async () => {
    const { plain, policed } = await full();
    const parked = [...plain, ...policed];
    expect((await ourContainers()).sort()).toEqual([...parked].sort());
    daemon!.kill('SIGKILL');
    await daemon;

    await startDaemon(false);
    expect(await ourContainers()).toEqual([]);
    for (const id of parked) expect(await netnsOf(id)).toEqual([]);
    await waitFor(async () => (await Promise.all(parked.map(cgroupsOf))).every((x) => x.length === 0), 60_000, 'the parked sandboxes cgroups are gone');
    // Parked sandboxes ran nothing of anyone's: no "reaped" row is left for them.
    expect((await c.list()).filter((v) => parked.includes(v.id))).toEqual([]);
    // The pool set at run time (pool set, setPool above) was stored and comes back (pool-persist.test.ts);
    // the policy pool of the --pool flags does not.
    expect((await c.pool()).map((p) => [p.rootfs, p.policy, p.size])).toEqual([[rootfs, null, 2]]);
  });
});
