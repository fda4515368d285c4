/**
 * `lattice daemon` with real runsc: sandbox run -d / ls / logs -f / stop / rm through the daemon, every
 * API response validated against api/openapi.json; kill -9 of the daemon with a sandbox running on a
 * network namespace, then `sandbox ls` alone and a restarted daemon: the sandbox is reaped (no runsc
 * container, netns or cgroup of it left) and listed as reaped, once.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { cgroupsOf, netnsOf, ourContainers as leftovers } from '../support/daemon-leftovers.js';
import { CLI, requireBinary, requireRoot, tempDir, busyboxRootfs, lattice, waitFor } from '../support/env.js';
import { openapiAjv } from '../support/test-daemon.js';
import { LatticeClient, socketAnswers } from '../../src/client/index.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;
let socket: string;
let daemon: ResultPromise | undefined;

const { doc: openapi, ajv } = openapiAjv<{
  paths: Record<string, Record<string, { responses: Record<string, { $ref?: string; content?: Record<string, { schema: unknown }> }> }>>;
}>();

/** The schema api/openapi.json gives for (template path, method, status), or undefined if it lists none. */
function responseSchema(template: string, method: string, status: number): unknown {
  const op = openapi.paths[template]?.[method.toLowerCase()];
  const r = op?.responses[String(status)];
  if (!r) return undefined;
  if (r.$ref) return { $ref: `openapi${r.$ref.replace('/responses/Error', '/schemas/Error')}` };
  const json = r.content?.['application/json'];
  return json ? rewriteRefs(json.schema) : null;
}

function rewriteRefs(s: unknown): unknown {
  return JSON.parse(JSON.stringify(s).replace(/"\$ref":"#/g, '"$ref":"openapi#'));
}

/** One API call over the socket; fails the test if the status or the body is not what the OpenAPI document says. */
async function api(method: string, path: string, template: string, body?: unknown): Promise<{ status: number; json: unknown; text: string }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const { status, text, type } = await new Promise<{ status: number; text: string; type: string }>((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers: payload ? { 'content-type': 'application/json' } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString(), type: String(res.headers['content-type'] ?? '') }));
    });
    req.once('error', reject);
    req.end(payload);
  });
  const schema = responseSchema(template, method, status);
  expect(schema, `${method} ${template} answered ${status}, which api/openapi.json does not list: ${text}`).not.toBeUndefined();
  let json: unknown;
  if (type.startsWith('application/json')) {
    json = JSON.parse(text);
    const ok = ajv.validate(schema as object, json);
    expect(ok, `${method} ${path} -> ${status} ${text} does not match api/openapi.json: ${ajv.errorsText()}`).toBe(true);
  }
  return { status, json, text };
}

async function startDaemon(): Promise<void> {
  daemon = execa(process.execPath, [CLI, '--state-dir', stateDir, 'daemon'], { reject: false, stdin: 'ignore' });
  await waitFor(() => socketAnswers(socket), 60_000, 'the daemon answers on its socket');
}

const ourContainers = () => leftovers(stateDir);

beforeAll(async () => {
  requireRoot();
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-daemon');
  rootfs = await busyboxRootfs(work.path);
  stateDir = join(work.path, 'state');
  socket = join(stateDir, 'daemon.sock');
  await execa('mkdir', ['-p', '-m', '700', stateDir]);
  await startDaemon();
});

afterAll(async () => {
  daemon?.kill('SIGTERM');
  await daemon;
  await lattice(stateDir, ['gc', '--kept']);
  await work?.remove();
});

describe('lattice daemon (real runsc)', () => {
  it('answers on a root-only socket', async () => {
    const st = await execa('stat', ['-c', '%a %U', socket]);
    expect(String(st.stdout)).toBe('600 root');
    const h = await api('GET', '/v1/health', '/v1/health');
    expect(h.status).toBe(200);
    expect((h.json as { pid: number }).pid).toBe(daemon!.pid);
  });

  it('sandbox run -d returns once it runs; ls, logs -f, stop and rm go through the daemon', async () => {
    const d = await lattice(stateDir, ['--verbose', 'sandbox', 'run', '-d', '--name', 'counter', '--rootfs', rootfs, '--', 'sh', '-c', 'i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done']);
    expect(d.exitCode, String(d.stderr)).toBe(0);
    expect(String(d.stdout).trim()).toBe('counter');
    expect(String(d.stderr)).toContain(`using the daemon at ${socket}`);

    const ls = await lattice(stateDir, ['sandbox', 'ls', '--json']);
    const rows = JSON.parse(String(ls.stdout)) as Array<{ id: string; name: string; status: string }>;
    expect(rows.map((r) => [r.name, r.status])).toEqual([['counter', 'running']]);
    const id = rows[0]!.id;
    expect(await ourContainers()).toEqual([id]);
    const listed = await api('GET', '/v1/sandboxes', '/v1/sandboxes');
    expect((listed.json as Array<{ id: string; running: boolean; daemon: boolean }>)[0]).toMatchObject({ id, running: true, daemon: true });

    // logs -f keeps printing until the sandbox exits: start it, see ticks arrive, stop the sandbox, and it ends.
    const follow = lattice(stateDir, ['sandbox', 'logs', '-f', 'counter']);
    let seen = '';
    follow.stdout!.on('data', (c: Buffer) => (seen += c.toString()));
    await waitFor(() => /tick3\n/.test(seen), 60_000, 'logs -f shows the counter');
    const stop = await lattice(stateDir, ['sandbox', 'stop', 'counter']);
    expect(stop.exitCode, String(stop.stderr)).toBe(0);
    expect(String(stop.stdout)).toMatch(/^counter exited \(\d+\)/);
    const f = await follow;
    expect(f.exitCode).toBe(0);
    const ticks = String(f.stdout).trim().split('\n');
    expect(ticks.slice(0, 4)).toEqual(['tick0', 'tick1', 'tick2', 'tick3']);
    // Each line once, in order: the file's past and the live chunks neither overlap nor leave a gap.
    expect(ticks).toEqual(ticks.map((_, i) => `tick${i}`));

    const got = await api('GET', `/v1/sandboxes/${id}`, '/v1/sandboxes/{ref}');
    expect(got.json).toMatchObject({ id, running: false, status: expect.stringMatching(/^exited \(\d+\)$/) as unknown });
    expect(await ourContainers()).toEqual([]);
    const logs = await lattice(stateDir, ['sandbox', 'logs', id]);
    expect(String(logs.stdout)).toBe(String(f.stdout));

    const rm = await lattice(stateDir, ['sandbox', 'rm', 'counter']);
    expect(rm.exitCode, String(rm.stderr)).toBe(0);
    expect((await api('GET', `/v1/sandboxes/${id}`, '/v1/sandboxes/{ref}')).status).toBe(404);
    expect(JSON.parse(String((await lattice(stateDir, ['sandbox', 'ls', '--json'])).stdout))).toEqual([]);
  });

  it('the typed client runs a command to its end with its exit code and output; bad input is a 400 that changes nothing', async () => {
    const c = new LatticeClient({ socket });
    const r = await c.run({ rootfs, cmd: ['sh', '-c', 'echo out; echo err >&2; exit 3'] });
    expect(r.exitCode).toBe(3);
    expect(r.output.toString()).toBe('out\nerr\n');
    await c.remove(r.sandbox.id);
    const bad = await api('POST', '/v1/sandboxes', '/v1/sandboxes', { rootfs, cmd: ['true'], bogus: 1 });
    expect(bad.status).toBe(400);
    const noRootfs = await api('POST', '/v1/sandboxes', '/v1/sandboxes', { cmd: ['true'] });
    expect(noRootfs.status).toBe(400);
    expect((noRootfs.json as { error: { code: string } }).error.code).toBe('EUSAGE');
    expect(await c.list()).toEqual([]);
  });

  it('kill -9 of the daemon: its sandbox is reaped (no container, netns or cgroup left), listed once as reaped, and a new daemon starts', async () => {
    const policy = join(work.path, 'policy.json');
    await writeFile(policy, JSON.stringify({ version: 1, egress: [] }));
    const d = await lattice(stateDir, ['sandbox', 'run', '-d', '--name', 'doomed', '--policy', policy, '--memory', '256m', '--rootfs', rootfs, '--', 'sleep', '1000']);
    expect(d.exitCode, String(d.stderr)).toBe(0);
    const [row] = JSON.parse(String((await lattice(stateDir, ['sandbox', 'ls', '--json'])).stdout)) as Array<{ id: string; status: string; address: string }>;
    const id = row!.id;
    expect(row!.status).toBe('running');
    expect(await netnsOf(id)).toHaveLength(1);
    expect(await ourContainers()).toEqual([id]);
    expect(await cgroupsOf(id)).not.toEqual([]);

    daemon!.kill('SIGKILL');
    await daemon;
    // Alone (no daemon answers): ls reaps and tells the truth.
    const alone = await lattice(stateDir, ['--verbose', 'sandbox', 'ls', '--json']);
    expect(String(alone.stderr)).toContain('working alone');
    expect((JSON.parse(String(alone.stdout)) as Array<{ id: string; status: string }>).map((r) => [r.id, r.status])).toEqual([[id, 'reaped']]);
    expect(await ourContainers()).toEqual([]);
    expect(await netnsOf(id)).toEqual([]);
    await waitFor(async () => (await cgroupsOf(id)).length === 0, 60_000, 'the sandbox cgroup is gone');

    await startDaemon();
    const after = await api('GET', '/v1/sandboxes', '/v1/sandboxes');
    expect((after.json as Array<{ id: string; status: string; running: boolean }>).map((r) => [r.id, r.status, r.running])).toEqual([[id, 'reaped', false]]);
    expect(await ourContainers()).toEqual([]);
    expect((await lattice(stateDir, ['sandbox', 'rm', id])).exitCode).toBe(0);
    expect((await api('GET', '/v1/sandboxes', '/v1/sandboxes')).json).toEqual([]);
  });
});
