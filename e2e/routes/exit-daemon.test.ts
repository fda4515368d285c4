/**
 * `lattice sandbox start -d --exit-node` with real components: the routes lab of exit-node.test.ts
 * (lab.ts: the exit node `lattice up --exit-node` in <p>-r, the test's "internet" 203.0.113.0/24 behind it
 * in <p>-s), and `lattice daemon` in <p>-b running the sandboxes (host <p>-b has no route to the internet).
 *
 * Proven, each sandbox started with `sandbox start -d`, waited for (exit 0) and read back with `sandbox logs`:
 *   - the daemon's create request carries the exit node (api/openapi.json and the daemon's schema agree);
 *   - `--exit-node nosuch` fails with the same one line and exit code from the daemon as in the foreground;
 *   - without --exit-node (and no namespace default) 203.0.113.10 is not reached, though policy allows it;
 *   - with --exit-node exit it is, and api.example.test (a domain rule, DNS through the exit node) too, the
 *     internet seeing the exit node's address; 203.0.113.11 (no rule) is refused as policy says;
 *   - once an operator sets the namespace's default exit node, a daemon sandbox without --exit-node leaves
 *     through it (the daemon and the foreground share src/sandbox/enrolled.ts's choice).
 * Waits are on events (output lines, the daemon's socket, the end of a sandbox's log), never sleeps.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { busyboxRootfs, waitFor, REPO } from '../support/env.js';
import { LatticeClient, socketAnswers } from '../../src/client/index.js';
import { CreateRequest } from '../../src/daemon/api.js';
import { startLab, startInternet, startExitNode, wireInternet, collect, NATS, EXIT_POLICY, type Lab } from './lab.js';

const NS = 'ltx';
let lab: Lab;
/** A line on stderr per step: where a run that times out stopped. */
const progress = (what: string) => console.error(`exit-daemon: ${what} ${new Date().toISOString()}`);

beforeAll(async () => {
  lab = await startLab(`ltx${randomBytes(2).toString('hex')}`, 8474, wireInternet);
}, 180_000);

afterAll(async () => lab?.stop(), 60_000);

describe('sandbox start -d with an exit node', () => {
  it('the create request carries exitNode, as api/openapi.json says', async () => {
    const openapi = JSON.parse(await readFile(join(REPO, 'api/openapi.json'), 'utf8')) as object;
    const ajv = new Ajv2020({ strict: false });
    (addFormats as unknown as (a: Ajv2020) => void)(ajv);
    ajv.addSchema(openapi, 'openapi');
    const body = (exitNode: string) => ({ name: 'a', rootfs: '/r', cmd: ['true'], network: { mode: 'enrolled', token: 't', exitNode } });
    for (const ok of ['exit', 'other-ns.exit', 'none']) {
      expect(ajv.validate({ $ref: 'openapi#/components/schemas/CreateRequest' }, body(ok)), `${ok}: ${ajv.errorsText()}`).toBe(true);
      expect(CreateRequest.safeParse(body(ok)).success, ok).toBe(true);
    }
    for (const bad of ['Exit', 'a.b.c', '-x', '']) {
      expect(ajv.validate({ $ref: 'openapi#/components/schemas/CreateRequest' }, body(bad)), bad).toBe(false);
      expect(CreateRequest.safeParse(body(bad)).success, bad).toBe(false);
    }
  });

  it('a daemon sandbox reaches the internet only through its exit node; a bad NAME fails as in the foreground; the namespace default applies', async () => {
    const policyFile = join(lab.work, 'policy.json');
    await writeFile(policyFile, JSON.stringify(EXIT_POLICY));
    const tk = await lab.admin(['token', 'create', '--namespace', NS, '--limit', '8', '--policy', policyFile]);
    expect(tk.exitCode, String(tk.stderr)).toBe(0);
    const token = String(tk.stdout).trim();
    progress('internet');
    const { httpdLog, asked } = await startInternet(lab);
    progress('exit node');
    const { upErr } = await startExitNode(lab, NS, token);

    const stateB = join(lab.work, 'state-b');
    await mkdir(stateB, { mode: 0o700 });
    const daemon = lab.inNs(lab.b, 'state-b', ['daemon']);
    lab.children.push(daemon);
    const daemonErr = collect(daemon, 'stderr');
    await waitFor(() => socketAnswers(join(stateB, 'daemon.sock')), 60_000, 'the daemon answers on its socket');
    const client = new LatticeClient({ socket: join(stateB, 'daemon.sock') });

    progress('daemon up');
    const rootfs = await busyboxRootfs(lab.work);
    const enroll = (name: string) => ['--name', name, '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.22'];
    /** `sandbox start -d` of `script`; resolves with its whole output once it ended (POST .../wait, then `sandbox logs`), exit 0. */
    const detached = async (name: string, flags: string[], script: string) => {
      const d = await lab.inNs(lab.b, 'state-b', ['sandbox', 'start', '-d', ...enroll(name), ...flags, '--rootfs', rootfs, '--', 'sh', '-c', script]);
      expect(d.exitCode, `start -d ${name}: ${String(d.stderr)} / daemon: ${daemonErr().slice(-800)}`).toBe(0);
      expect(String(d.stdout).trim()).toBe(name);
      progress(`started ${name}`);
      const ended = await client.wait(name);
      const logs = await lab.inNs(lab.b, 'state-b', ['sandbox', 'logs', name]);
      expect(logs.exitCode, String(logs.stderr)).toBe(0);
      expect(ended.exitCode, `${name}: ${String(logs.stdout)}`).toBe(0);
      return String(logs.stdout);
    };
    const get = (addr: string) => `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${addr} 443 | grep -q hello-from-internet`;
    const tryGet = (addr: string, tag: string) => `if ${get(addr)}; then echo ${tag}-REACHED; else echo ${tag}-REFUSED; fi`;

    // NAME that is no approved exit node: the same one line, and exit code, from the daemon as in the foreground.
    progress('fg bad');
    const fg = await lab.inNs(lab.b, 'state-b', ['sandbox', 'start', ...enroll('bad-f'), '--exit-node', 'nosuch', '--rootfs', rootfs, '--', 'true']);
    progress('bg bad');
    const bg = await lab.inNs(lab.b, 'state-b', ['sandbox', 'start', '-d', ...enroll('bad-d'), '--exit-node', 'nosuch', '--rootfs', rootfs, '--', 'true']);
    const lines = (s: unknown) => String(s).split('\n').filter((l) => l.startsWith('lattice: '));
    expect(lines(fg.stderr)).toEqual([`lattice: exit node nosuch is not a peer this agent sees (namespace ${NS} and the namespaces its token allows); name one from lattice route ls, or drop --exit-node`]);
    expect(lines(bg.stderr)).toEqual(lines(fg.stderr));
    expect(fg.exitCode).toBe(2);
    expect(bg.exitCode).toBe(2);

    // No exit node (and no namespace default): the policy allows 203.0.113.10, but nothing carries it there.
    progress('nox');
    const none = await detached('nox', [], tryGet('203.0.113.10', 'DIRECT'));
    expect(none).toContain('DIRECT-REFUSED');
    expect(httpdLog()).not.toContain('198.51.100.1');

    // Through the exit node: the CIDR rule, the domain rule (DNS through the tunnel), and no rule (refused).
    progress('sbx');
    const via = await detached('sbx', ['--exit-node', 'exit'], [
      `i=0; until ${get('203.0.113.10')}; do i=$((i+1)); [ $i -ge 30 ] && break; sleep 0.3; done`,
      tryGet('203.0.113.10', 'WEB'),
      tryGet('api.example.test', 'NAME'),
      tryGet('203.0.113.11', 'OTHER'),
    ].join('\n'));
    expect(via, `daemon: ${daemonErr().slice(-800)} / exit node: ${upErr().slice(-600)}`).toContain('WEB-REACHED');
    expect(via).toContain('NAME-REACHED');
    expect(via).toContain('OTHER-REFUSED');
    expect(asked()).toContain('api.example.test');
    // Source NAT at the exit node: the internet saw its address, never the overlay's or the sandbox host's.
    expect(httpdLog()).toContain('198.51.100.1');
    expect(httpdLog()).not.toMatch(/10\.77\.\d+\.\d+/);
    expect(httpdLog()).not.toContain('198.18.0.22');

    // The namespace's default exit node reaches daemon sandboxes that name none.
    const set = await lab.admin(['namespace', 'set', NS, '--exit-node', 'exit']);
    expect(set.exitCode, String(set.stderr)).toBe(0);
    progress('def');
    const byDefault = await detached('def', [], [
      `i=0; until ${get('api.example.test')}; do i=$((i+1)); [ $i -ge 30 ] && break; sleep 0.3; done`,
      tryGet('api.example.test', 'DEFAULT'),
    ].join('\n'));
    expect(byDefault, `daemon: ${daemonErr().slice(-800)}`).toContain('DEFAULT-REACHED');

  }, 300_000);
});
