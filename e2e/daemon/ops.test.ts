/**
 * Working inside a daemon sandbox through the API (issue 19 items 3-5), real runsc: exec with its exit code,
 * stdin, stderr, SIGTERM (sent, and by a client that goes away) and a TTY; cp both ways, with hostile
 * symlinks planted in the sandbox that must not make the host read or write outside DST; pause stops a
 * counter and resume continues it; checkpoint saves and stops it and `sandbox restore` continues the count.
 * Every JSON response (and each exec's exit frame) is validated against api/openapi.json.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { lstat, mkdir, readFile, readdir, readlink, stat, symlink, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ourContainers } from '../support/daemon-leftovers.js';
import { CLI, busyboxRootfs, lattice, requireBinary, requireRoot, tempDir, waitFor } from '../support/env.js';
import { openapiAjv } from '../support/test-daemon.js';
import { DaemonApiError, LatticeClient, socketAnswers, type ExecRequest, type ExecSession } from '../../src/client/index.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;
let socket: string;
let daemon: ResultPromise | undefined;
let c: LatticeClient;
const name = `ops-${randomBytes(3).toString('hex')}`;

const { doc: openapi, ajv } = openapiAjv<{
  paths: Record<string, Record<string, { responses: Record<string, { $ref?: string; content?: Record<string, { schema: unknown }> }> }>>;
}>();

/** Fail unless `json` (the reply of `method template` with `status`) is what api/openapi.json says. */
function validate(template: string, method: string, status: number, type: string, body: string): unknown {
  const r = openapi.paths[template]?.[method.toLowerCase()]?.responses[String(status)];
  expect(r, `${method} ${template} answered ${status}, which api/openapi.json does not list: ${body}`).toBeDefined();
  const media = r!.$ref ? 'application/json' : Object.keys(r!.content ?? {})[0];
  expect(type.split(';')[0] || undefined, `${method} ${template} ${status}: content type`).toBe(media);
  if (media !== 'application/json') return undefined;
  const schema = r!.$ref ? { $ref: 'openapi#/components/schemas/Error' } : JSON.parse(JSON.stringify(r!.content!['application/json']!.schema).replace(/"\$ref":"#/g, '"$ref":"openapi#'));
  const json = JSON.parse(body) as unknown;
  expect(ajv.validate(schema as object, json), `${method} ${template} -> ${status} ${body}: ${ajv.errorsText()}`).toBe(true);
  return json;
}

/** One plain API call over the socket, validated. */
async function api(method: string, path: string, template: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: unknown; raw: Buffer }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const r = await new Promise<{ status: number; raw: Buffer; type: string }>((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers: { ...headers, ...(payload ? { 'content-type': 'application/json' } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (x: Buffer) => chunks.push(x));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, raw: Buffer.concat(chunks), type: String(res.headers['content-type'] ?? '') }));
    });
    req.once('error', reject);
    req.end(payload);
  });
  return { status: r.status, raw: r.raw, json: validate(template, method, r.status, r.type, r.raw.toString()) };
}

/** An exec refused before the upgrade: the plain reply, validated. */
async function refusedExec(ref: string, body: unknown): Promise<{ status: number; json: { error: { code: string; message: string } } }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method: 'POST', path: `/v1/sandboxes/${ref}/exec`, headers: { connection: 'Upgrade', upgrade: 'lattice-exec', 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } });
    req.once('upgrade', (_r, s) => {
      s.destroy();
      reject(new Error('the exec was upgraded; expected a refusal'));
    });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (x: Buffer) => chunks.push(x));
      res.on('end', () => {
        const json = validate('/v1/sandboxes/{ref}/exec', 'POST', res.statusCode ?? 0, String(res.headers['content-type']), Buffer.concat(chunks).toString());
        resolve({ status: res.statusCode ?? 0, json: json as { error: { code: string; message: string } } });
      });
    });
    req.once('error', reject);
    req.end(payload);
  });
}

/** Run an exec to its end: its output and its exit frame (validated as ExecExit). */
async function run(req: ExecRequest, input?: string) {
  const s = await c.exec(name, req);
  return finish(s, input);
}

async function finish(s: ExecSession, input?: string) {
  let out = '';
  let err = '';
  s.stdout.on('data', (x: Buffer) => (out += x.toString()));
  s.stderr.on('data', (x: Buffer) => (err += x.toString()));
  if (input !== undefined) s.stdin.end(input);
  const exit = await s.exit;
  expect(ajv.validate({ $ref: 'openapi#/components/schemas/ExecExit' }, exit), `exit frame ${JSON.stringify(exit)}: ${ajv.errorsText()}`).toBe(true);
  return { out, err, exit };
}

/** An exec whose stdout said "ready". */
async function ready(script: string, req: Partial<ExecRequest> = {}) {
  const s = await c.exec(name, { cmd: ['sh', '-c', script], ...req });
  let out = '';
  s.stdout.on('data', (x: Buffer) => (out += x.toString()));
  await waitFor(() => out.includes('ready'), 60_000, 'the exec to say ready');
  return { s, output: () => out };
}

// Planted by the sandbox itself: links out of any DST (absolute, ../, /), a setuid file; and a counter.
const SCRIPT = [
  'mkdir -p /tmp/h/sub; echo inside > /tmp/h/file; chmod 4755 /tmp/h/file; echo deep > /tmp/h/sub/deep',
  'ln -s /etc/passwd /tmp/h/passwd; ln -s ../../../../../../ /tmp/h/up; ln -s / /tmp/h/root',
  'i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; echo $i; sleep 0.05; done',
].join('\n');

/** The last number the sandbox's counter printed, from its log (readable while it is paused). */
async function printed(ref: string): Promise<number> {
  let log = '';
  for await (const x of c.logs(ref)) log += x.toString();
  return Number(log.trim().split('\n').at(-1) ?? 0);
}

beforeAll(async () => {
  requireRoot();
  await requireBinary('runsc');
  await requireBinary('tar');
  work = await tempDir('lt-e2e-daemon-ops');
  rootfs = await busyboxRootfs(work.path);
  stateDir = join(work.path, 'state');
  socket = join(stateDir, 'daemon.sock');
  await execa('mkdir', ['-p', '-m', '700', stateDir]);
  daemon = execa(process.execPath, [CLI, '--state-dir', stateDir, 'daemon'], { reject: false, stdin: 'ignore' });
  await waitFor(() => socketAnswers(socket), 60_000, 'the daemon answers on its socket');
  c = new LatticeClient({ socket });
  await c.create({ name, rootfs, cmd: ['sh', '-c', SCRIPT] });
  await waitFor(async () => (await run({ cmd: ['cat', '/tmp/c'] })).out.trim() !== '', 60_000, 'the counter');
});

afterAll(async () => {
  daemon?.kill('SIGTERM');
  await daemon;
  await lattice(stateDir, ['gc', '--kept']);
  await work?.remove();
});

describe('exec through the daemon', () => {
  it('passes the exit status, stdout and stderr apart; --user, --cwd, --env', async () => {
    const r = await run({ cmd: ['sh', '-c', 'echo to-out; echo to-err >&2; exit 3'] });
    expect(r).toEqual({ out: 'to-out\n', err: 'to-err\n', exit: { exitCode: 3 } });
    const u = await run({ cmd: ['sh', '-c', 'id -u; pwd; echo $GREETING'], user: 'agent', cwd: '/tmp', env: ['GREETING=hi'] });
    expect(u.out).toBe('1000\n/tmp\nhi\n');
  });

  it('stdin reaches the process only when asked (echoed back); without it the process reads /dev/null', async () => {
    const data = `${randomBytes(40_000).toString('base64')}\nline two\n`;
    const echo = await run({ cmd: ['cat'], stdin: true }, data);
    expect(echo.exit.exitCode).toBe(0);
    expect(echo.out).toBe(data);
    const none = await run({ cmd: ['cat'] });
    expect(none).toEqual({ out: '', err: '', exit: { exitCode: 0 } });
  });

  it('a missing command exits 127 with ESANDBOX_COMMAND_NOT_FOUND; bad requests are refused before the upgrade', async () => {
    const r = await run({ cmd: ['nonexist'] });
    expect(r.exit.exitCode).toBe(127);
    expect(r.exit.error?.code).toBe('ESANDBOX_COMMAND_NOT_FOUND');
    expect((await refusedExec(`${name}-nope`, { cmd: ['true'] })).status).toBe(404);
    const bad = await refusedExec(name, { cmd: [], bogus: 1 });
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe('EUSAGE');
    const env = await refusedExec(name, { cmd: ['true'], env: ['not a pair'] });
    expect(env.status).toBe(400);
    const plain = await api('POST', `/v1/sandboxes/${name}/exec`, '/v1/sandboxes/{ref}/exec', { cmd: ['true'] });
    expect(plain.status).toBe(400);
    await expect(c.exec(`${name}-nope`, { cmd: ['true'] })).rejects.toMatchObject({ status: 404, code: 'ESANDBOX_NOT_FOUND' });
  });

  it('a SIGTERM sent by the client reaches the process: it traps it and exits 5', async () => {
    const { s, output } = await ready('trap "echo trapped; exit 5" TERM; echo ready; while true; do sleep 0.1; done');
    s.signal('SIGTERM');
    const exit = await s.exit;
    expect(exit.exitCode).toBe(5);
    expect(output()).toContain('trapped');
  });

  it('a client that goes away: the process gets SIGTERM', async () => {
    const mark = `/tmp/aborted-${randomBytes(3).toString('hex')}`;
    const { s } = await ready(`trap "echo bye > ${mark}; exit 0" TERM; echo ready; while true; do sleep 0.1; done`);
    s.close();
    await expect(s.exit).rejects.toBeInstanceOf(DaemonApiError);
    await waitFor(async () => (await run({ cmd: ['cat', mark] })).out === 'bye\n', 60_000, 'the trap to run');
  });

  it('tty: the process runs on a terminal of the requested size, reads a typed line and its output is the terminal\'s', async () => {
    const { s, output } = await ready('[ -t 0 ] && [ -t 1 ] && echo on-a-tty; stty size; echo ready; read x; echo got-$x', { tty: true, stdin: true, cols: 100, rows: 30 });
    s.stdin.write('abc\r');
    const exit = await s.exit;
    expect(exit.exitCode).toBe(0);
    expect(output()).toContain('on-a-tty\r\n30 100\r\n');
    expect(output()).toContain('got-abc\r\n'); // the terminal's line discipline: \r\n, and the typed line echoed
    const plain = await run({ cmd: ['sh', '-c', '[ -t 0 ] || [ -t 1 ] && echo tty || echo no-tty'] });
    expect(plain.out).toBe('no-tty\n');
  });
});

describe('cp through the daemon', () => {
  it('out: symlinks arrive as links (never followed), setuid cleared, nothing lands outside DST', async () => {
    const outer = join(work.path, 'outer');
    const dst = join(outer, 'dst');
    await mkdir(dst, { recursive: true });
    const passwd = await readFile('/etc/passwd');
    expect(await c.cpOut(name, '/tmp/h', dst)).toBe(join(dst, 'h'));
    expect(await readdir(outer)).toEqual(['dst']);
    expect((await readdir(join(dst, 'h'))).sort()).toEqual(['file', 'passwd', 'root', 'sub', 'up']);
    expect(await readFile(join(dst, 'h/file'), 'utf8')).toBe('inside\n');
    expect((await stat(join(dst, 'h/file'))).mode & 0o7777).toBe(0o755);
    expect(await readFile(join(dst, 'h/sub/deep'), 'utf8')).toBe('deep\n');
    for (const [link, target] of [['passwd', '/etc/passwd'], ['up', '../../../../../../'], ['root', '/']]) {
      expect((await lstat(join(dst, 'h', link!))).isSymbolicLink()).toBe(true);
      expect(await readlink(join(dst, 'h', link!))).toBe(target);
    }
    expect(await readFile('/etc/passwd')).toEqual(passwd);
    // A hostile link named as SRC comes as the link itself, even into a DST that already holds a file.
    expect(await c.cpOut(name, '/tmp/h/root', join(dst, 'r'))).toBe(join(dst, 'r'));
    expect(await readlink(join(dst, 'r'))).toBe('/');
  });

  it('out: the archive is a tar; a missing path is a 400 with tar\'s reason and nothing is written', async () => {
    const ok = await api('GET', `/v1/sandboxes/${name}/archive?path=/tmp/h/file`, '/v1/sandboxes/{ref}/archive');
    expect(ok.status).toBe(200);
    expect(ok.raw.subarray(257, 262).toString()).toBe('ustar');
    const missing = await api('GET', `/v1/sandboxes/${name}/archive?path=/tmp/nonexist`, '/v1/sandboxes/{ref}/archive');
    expect(missing.status).toBe(400);
    expect((missing.json as { error: { code: string; message: string } }).error).toMatchObject({ code: 'ESANDBOX_COPY', message: expect.stringMatching(/No such file or directory/) as unknown });
    const dst = join(work.path, 'missing');
    await mkdir(dst);
    await expect(c.cpOut(name, '/tmp/nonexist', dst)).rejects.toMatchObject({ status: 400, code: 'ESANDBOX_COPY' });
    expect(await readdir(dst)).toEqual([]);
    expect((await api('GET', `/v1/sandboxes/${name}/archive?path=relative`, '/v1/sandboxes/{ref}/archive')).status).toBe(400);
  });

  it('in: a directory (its symlink as a link) into a directory, a file as a new name; a read-only place fails with the sandbox\'s reason', async () => {
    const src = join(work.path, 'src');
    await mkdir(join(src, 'tree/sub'), { recursive: true });
    await writeFile(join(src, 'tree/sub/a.txt'), 'alpha\n');
    await symlink('/etc/shadow', join(src, 'tree/link'));
    await writeFile(join(src, 'one.txt'), 'one\n');
    const st = await api('GET', `/v1/sandboxes/${name}/stat?path=/tmp`, '/v1/sandboxes/{ref}/stat');
    expect(st.json).toEqual({ path: '/tmp', directory: true });
    expect(await c.cpIn(name, join(src, 'tree'), '/tmp')).toBe('/tmp/tree');
    expect(await c.cpIn(name, join(src, 'one.txt'), '/tmp/renamed.txt')).toBe('/tmp/renamed.txt');
    const r = await run({ cmd: ['sh', '-c', 'cat /tmp/tree/sub/a.txt /tmp/renamed.txt; readlink /tmp/tree/link'] });
    expect(r.out).toBe('alpha\none\n/etc/shadow\n');
    await expect(c.cpIn(name, join(src, 'one.txt'), '/etc/')).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/Read-only file system/) as unknown });
  });
});

describe('pause, resume and checkpoint through the daemon', () => {
  it('pause stops the counter, resume continues it; pausing twice or resuming a running one is a 409', async () => {
    expect((await api('POST', `/v1/sandboxes/${name}/pause`, '/v1/sandboxes/{ref}/pause')).status).toBe(204);
    expect((await api('POST', `/v1/sandboxes/${name}/pause`, '/v1/sandboxes/{ref}/pause')).status).toBe(409);
    // Later events than the pause: each `sandbox ls` is a process of its own that takes a while. Output the
    // loop wrote before the freeze is in the log by the first read; nothing may arrive after it.
    const ls = () => lattice(stateDir, ['sandbox', 'ls']);
    await ls();
    const frozen = await printed(name);
    for (let i = 0; i < 3; i++) await ls();
    expect(await printed(name)).toBe(frozen);
    await c.resume(name);
    await waitFor(async () => (await printed(name)) > frozen + 3, 60_000, 'the counter to advance after resume');
    expect(Number((await run({ cmd: ['cat', '/tmp/c'] })).out)).toBeGreaterThan(frozen);
    const again = await api('POST', `/v1/sandboxes/${name}/resume`, '/v1/sandboxes/{ref}/resume');
    expect(again.status).toBe(409);
    expect((again.json as { error: { code: string } }).error.code).toBe('ESANDBOX_NOT_PAUSED');
  });

  it('checkpoint saves and stops the sandbox; sandbox restore continues its count', async () => {
    const box = `ck-${randomBytes(3).toString('hex')}`;
    await c.create({ name: box, rootfs, cmd: ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done'] });
    await waitFor(async () => (await printed(box)) > 3, 60_000, 'the second counter');
    const to = join(work.path, 'ck');
    const bad = await api('POST', `/v1/sandboxes/${box}/checkpoint`, '/v1/sandboxes/{ref}/checkpoint', { to: 'relative' });
    expect(bad.status).toBe(400);
    const r = await api('POST', `/v1/sandboxes/${box}/checkpoint`, '/v1/sandboxes/{ref}/checkpoint', { to });
    expect(r.status).toBe(200);
    const reply = r.json as { path: string; sandbox: { running: boolean; name: string; id: string } };
    expect(reply.path).toBe(to);
    expect(reply.sandbox).toMatchObject({ name: box, running: false });
    expect((await readdir(to)).sort()).toEqual(['config.json', 'image', 'lattice-checkpoint.json']);
    expect((await stat(to)).mode & 0o777).toBe(0o700);
    const saved = await printed(box);
    expect((await ourContainers(stateDir)).includes(reply.sandbox.id)).toBe(false);
    expect((await api('POST', `/v1/sandboxes/${box}/checkpoint`, '/v1/sandboxes/{ref}/checkpoint', { to: join(work.path, 'ck2') })).status).toBe(409);

    const restored = lattice(stateDir, ['sandbox', 'restore', to, '--name', `${box}-r`]);
    let out = '';
    restored.stdout?.on('data', (x: Buffer) => (out += x.toString()));
    try {
      await waitFor(() => out.trim().split('\n').length > 3, 60_000, 'the restored counter');
      const first = Number(out.trim().split('\n')[0]);
      // It continued from the saved count (runsc may have run a tick between the last logged line and the save).
      expect(first).toBeGreaterThan(saved);
      expect(first).toBeLessThanOrEqual(saved + 3);
    } finally {
      restored.kill('SIGTERM');
      await restored;
    }
    await c.remove(box);
  });
});
