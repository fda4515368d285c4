/**
 * Restore through the daemon API (real runsc): a counter sandbox checkpointed with POST .../checkpoint and
 * removed, then continued with POST /v1/sandboxes/restore, counts on from where it was saved; the restored
 * sandbox is the daemon's (logs, exec, stop, rm work on it). Bad requests: a relative FROM, a directory that
 * is not a checkpoint, a running name. Replies are validated against api/openapi.json.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ourContainers } from '../support/daemon-leftovers.js';
import { busyboxRootfs, lattice, requireBinary, requireRoot, tempDir, waitFor } from '../support/env.js';
import { openapiAjv, startTestDaemon, type TestDaemon } from '../support/test-daemon.js';
import { DaemonApiError, LatticeClient } from '../../src/client/index.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;
let socket: string;
let daemon: TestDaemon | undefined;
let c: LatticeClient;
const box = `rs-${randomBytes(3).toString('hex')}`;

const { doc: openapi, ajv } = openapiAjv<{ paths: Record<string, Record<string, { responses: Record<string, unknown> }>> }>();
/** Fail unless api/openapi.json lists `status` for POST /v1/sandboxes/restore and `value` is its body. */
function expectReply(status: 201 | 400 | 409, value: unknown): void {
  expect(openapi.paths['/v1/sandboxes/restore']?.post?.responses, 'the responses of POST /v1/sandboxes/restore').toHaveProperty(String(status));
  const schema = status === 201 ? 'openapi#/paths/~1v1~1sandboxes~1restore/post/responses/201/content/application~1json/schema' : 'openapi#/components/schemas/Error';
  expect(ajv.validate({ $ref: schema }, value), `${JSON.stringify(value)}: ${ajv.errorsText()}`).toBe(true);
}

/** The last number the counter wrote to the log of `ref`, and how many lines. */
async function counted(ref: string): Promise<{ last: number; first: number; lines: number }> {
  let log = '';
  for await (const x of c.logs(ref)) log += x.toString();
  const lines = log.trim().split('\n').filter(Boolean);
  return { last: Number(lines.at(-1) ?? 0), first: Number(lines[0] ?? 0), lines: lines.length };
}

/** The daemon's error for `p` (which must fail), its body validated. */
async function refused(p: Promise<unknown>, status: 400 | 409): Promise<DaemonApiError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DaemonApiError);
  const e = err as DaemonApiError;
  expect(e.status, e.message).toBe(status);
  expectReply(status, { error: { code: e.code, message: e.message } });
  return e;
}

beforeAll(async () => {
  requireRoot();
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-daemon-restore');
  rootfs = await busyboxRootfs(work.path);
  stateDir = join(work.path, 'state');
  socket = join(stateDir, 'daemon.sock');
  await execa('mkdir', ['-p', '-m', '700', stateDir]);
  daemon = await startTestDaemon(stateDir, socket);
  c = new LatticeClient({ socket });
});

afterAll(async () => {
  daemon?.run.kill('SIGTERM');
  await daemon?.run;
  await lattice(stateDir, ['gc', '--kept']);
  await work?.remove();
});

describe('restore through the daemon API', () => {
  it('a checkpointed counter, the original removed, continues its count as a daemon sandbox (logs, exec, stop, rm)', async () => {
    await c.create({ name: box, rootfs, cmd: ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done'] });
    await waitFor(async () => (await counted(box)).lines > 3, 60_000, 'the counter');
    const to = join(work.path, 'ck');
    const ck = await c.checkpoint(box, to);
    expect(ck.sandbox).toMatchObject({ name: box, running: false });
    const saved = (await counted(box)).last;
    await c.remove(box);
    expect((await c.list()).map((v) => v.name)).not.toContain(box);

    const view = await c.restore(to, { name: `${box}-r` });
    expectReply(201, view);
    expect(view).toMatchObject({ name: `${box}-r`, status: 'running', running: true, daemon: true });
    expect(view.command).toContain('while true');
    expect(view.id).not.toBe(ck.sandbox.id);
    expect(await ourContainers(stateDir)).toContain(view.id);

    // Its log is the restored process's output: the count goes on from the saved one (runsc may have run a
    // tick between the last logged line and the save).
    await waitFor(async () => (await counted(view.id)).lines > 3, 60_000, 'the restored counter');
    const after = await counted(view.id);
    expect(after.first).toBeGreaterThan(saved);
    expect(after.first).toBeLessThanOrEqual(saved + 3);
    expect(after.last).toBeGreaterThan(after.first);

    // exec works in it, and sees the restored process's state.
    const x = await c.exec(view.name, { cmd: ['sh', '-c', 'ps -o pid,args | grep -c "while true"'] });
    let out = '';
    x.stdout.on('data', (b: Buffer) => (out += b.toString()));
    expect((await x.exit).exitCode).toBe(0);
    expect(Number(out.trim())).toBeGreaterThanOrEqual(1);

    const stopped = await c.stop(view.name);
    expect(stopped).toMatchObject({ id: view.id, running: false });
    expect(await ourContainers(stateDir)).not.toContain(view.id);
    await c.remove(view.id);
    expect((await c.list()).map((v) => v.id)).not.toContain(view.id);
  });

  it('refuses a relative FROM, a directory that is not a checkpoint (400) and a running name (409), starting nothing', async () => {
    const before = await ourContainers(stateDir);
    expect((await refused(c.restore('relative/ck'), 400)).message).toContain('absolute');
    const empty = join(work.path, 'not-a-checkpoint');
    await mkdir(empty);
    expect((await refused(c.restore(empty), 400)).code).toBe('ESANDBOX_CHECKPOINT');
    expect((await refused(c.restore(join(work.path, 'nowhere')), 400)).message).toContain('is not a directory');

    const other = await c.create({ name: `${box}-busy`, rootfs, cmd: ['sleep', '1000'] });
    const to = join(work.path, 'ck2');
    await c.create({ name: `${box}-2`, rootfs, cmd: ['sleep', '1000'] });
    await c.checkpoint(`${box}-2`, to);
    expect((await refused(c.restore(to, { name: `${box}-busy` }), 409)).code).toBe('ESANDBOX_RUNNING');
    expect((await ourContainers(stateDir)).sort()).toEqual([...before, other.id].sort());
    await c.stop(other.id);
    for (const ref of [other.id, `${box}-2`]) await c.remove(ref);
  });
});
