/**
 * `lattice sandbox start` against a real control plane (embedded nats-server): enrollment, restart
 * with the stored identity, revocation of a running agent, and the errors a user meets first.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice, CLI, REPO } from '../support/env.js';
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from '../support/control-plane.js';
import { waitFor } from '../support/wgpeer.js';
import { freePort } from '../../src/natsserver/server.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let cp: EmbeddedControlPlane | undefined;
let natsUrl: string;
let api: string;
let cpState: string;
const running: ResultPromise[] = [];

const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [{ id: 'http', action: 'allow', cidrs: ['10.77.0.0/16', 'fd77::/48'], ports: [8080], protocol: 'tcp' }],
  ingress: [{ id: 'http-in', action: 'allow', cidrs: ['10.77.0.0/16', 'fd77::/48'], ports: [8080], protocol: 'tcp' }],
};

async function token(namespace: string, limit = 1, extra: string[] = []): Promise<string> {
  const policy = join(work.path, 'policy.json');
  await writeFile(policy, JSON.stringify(POLICY));
  const r = await lattice(cpState, ['token', 'create', '--namespace', namespace, '--limit', String(limit), '--policy', policy, '--api', api, ...extra]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return String(r.stdout).trim();
}

function start(name: string, args: string[], cmd: string[]): ResultPromise {
  const child = lattice(join(work.path, `state-${name}`), ['sandbox', 'start', '--name', name, '--rootfs', rootfs, ...args, '--', ...cmd]);
  running.push(child);
  return child;
}

async function credentials(name: string): Promise<{ publicKey: string; address: { ipv4: string }; privateKey: string }> {
  return JSON.parse(await readFile(join(work.path, `state-${name}`, 'credentials', `${name}.json`), 'utf8')) as never;
}

beforeAll(async () => {
  for (const bin of ['runsc', 'nats-server', 'gcc']) await requireBinary(bin);
  work = await tempDir('lt-e2e-start');
  rootfs = await busyboxRootfs(work.path);
  cpState = join(work.path, 'cp');
  cp = await startEmbeddedControlPlane(cpState);
  ({ natsUrl, api } = cp);
});

afterAll(async () => {
  for (const c of running) c.kill('SIGTERM');
  await Promise.allSettled(running);
  await cp?.stop();
  await work?.remove();
});

describe('lattice sandbox start (real control plane, real runsc)', () => {
  it('two enrolled sandboxes reach each other on the overlay by name, under the namespace policy', async () => {
    const t = await token('e2e', 2);
    const web = start('web', ['--control-plane', natsUrl, '--token', t], ['sh', '-c', 'mkdir -p /tmp/w && echo hello-overlay > /tmp/w/index.html && httpd -f -p 8080 -h /tmp/w']);
    let webErr = '';
    web.stderr?.on('data', (d: Buffer) => (webErr += d.toString()));
    await waitFor(async () => webErr.includes('enrolled'), 60_000, 'web enrolled');
    const client = await lattice(join(work.path, 'state-client'), [
      'sandbox', 'start', '--name', 'client', '--control-plane', natsUrl, '--token', t, '--rootfs', rootfs, '--',
      'sh', '-c',
      // Each step retries until it succeeds (the first SYN may wait for a handshake): the test's timeout bounds it.
      `until addrs=$(nslookup web.e2e.lattice | awk '/^Name:/ {f=1} f && /^Address/ {print $2}') && [ -n "$addrs" ]; do sleep 0.2; done; ` +
        `echo "addrs=$addrs"; for a in $addrs; do ` +
        `until body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 4 "$a" 8080 | tail -n 1) && [ -n "$body" ]; do sleep 0.2; done; echo "via $a: $body"; done`,
    ]);
    expect(client.exitCode, String(client.stderr)).toBe(0);
    // Both families: the overlay name answers A and AAAA, and HTTP works over each.
    expect(client.stdout).toMatch(/via 10\.77\.\d+\.\d+: hello-overlay/);
    expect(client.stdout).toMatch(/via fd77:[0-9a-f:]+: hello-overlay/);
    // Every allowed flow's close is recorded at the control plane (a fractional durationMs was once refused by the
    // outbox's schema check, so allowed flows had no flow.closed and the launcher logged "audit event not recorded").
    expect(String(client.stderr)).not.toMatch(/audit event not recorded/);
    await waitFor(async () => {
      const q = await lattice(cpState, ['audit', 'events', '--agent', 'e2e/client', '--type', 'flow.closed', '--json', '--api', api]);
      const closed = ((JSON.parse(String(q.stdout) || '{"events":[]}') as { events: { dstPort?: number; durationMs?: number }[] }).events).filter((e) => e.dstPort === 8080);
      return closed.length >= 2 && closed.every((e) => Number.isInteger(e.durationMs));
    }, 60_000, "the client's flow.closed events (IPv4 and IPv6) at the control plane");
    // The token's limit is spent: a third agent cannot enroll with it.
    const third = await lattice(join(work.path, 'state-third'), ['sandbox', 'start', '--name', 'third', '--control-plane', natsUrl, '--token', t, '--rootfs', rootfs, '--', 'true']);
    expect(third.exitCode).not.toBe(0);
    expect(String(third.stderr).trim().split('\n')).toHaveLength(1);
  });

  it('a restart reuses the stored identity (same key, same address) without a token', async () => {
    const t = await token('e2e-restart', 1);
    // LATTICE_LOG_LEVEL=info: the "sandbox network up" line names the overlay the pump was given.
    const info = { env: { LATTICE_LOG_LEVEL: 'info', LATTICE_LOG_FORMAT: 'json' } };
    const first = await lattice(join(work.path, 'state-again'), ['sandbox', 'start', '--name', 'again', '--control-plane', natsUrl, '--token', t, '--rootfs', rootfs, '--', 'true'], info);
    expect(first.exitCode, String(first.stderr)).toBe(0);
    const before = await credentials('again');
    // A bad DNS limit is refused before anything starts: exit 2, one line, the identity untouched.
    const bad = await lattice(join(work.path, 'state-again'), ['sandbox', 'start', '--name', 'again', '--dns-rate', '0', '--rootfs', rootfs, '--', 'true']);
    expect(bad.exitCode).toBe(2);
    expect(String(bad.stderr).trim().split('\n')).toEqual([expect.stringMatching(/--dns-rate 0 is out of range; give a number of upstream lookups per second from 0\.1 to 10000/)]);
    const second = await lattice(
      join(work.path, 'state-again'),
      ['sandbox', 'start', '--name', 'again', '--dns-max-in-flight', '8', '--dns-rate', '2.5', '--dns-burst', '20', '--rootfs', rootfs, '--', 'sh', '-c', 'ip -o addr'],
      info,
    );
    expect(second.exitCode, String(second.stderr)).toBe(0);
    expect(second.stderr).toMatch(/reusing e2e-restart\/again/);
    const after = await credentials('again');
    expect(after.publicKey).toBe(before.publicKey);
    expect(after.address.ipv4).toBe(before.address.ipv4);
    expect(second.stdout).toContain(before.address.ipv4);
    // The enrollment's overlay pools reach the pump, on the first start and from the stored identity (#13).
    for (const r of [first, second]) expect(String(r.stderr)).toMatch(/"overlay":\["10\.77\.0\.0\/16","fd77::\/48"\]/);
    // --dns-* flags reach the pump's DNS limiter; without them it keeps its defaults.
    expect(String(first.stderr)).toContain('"dnsLimits":{"maxInFlight":64,"perSecond":50,"burst":100}');
    expect(String(second.stderr)).toContain('"dnsLimits":{"maxInFlight":8,"perSecond":2.5,"burst":20}');
    const { statSync } = await import('node:fs');
    expect(statSync(join(work.path, 'state-again', 'credentials', 'again.json')).mode & 0o777).toBe(0o600);
  });

  it('revocation reaches the running launcher, its tunnel stops carrying traffic, and it cannot come back', async () => {
    const t = await token('e2e-revoke', 2);
    const web = start('rweb', ['--control-plane', natsUrl, '--token', t], ['sh', '-c', 'mkdir -p /tmp/w && echo alive > /tmp/w/index.html && httpd -f -p 8080 -h /tmp/w']);
    let webErr = '';
    web.stderr?.on('data', (d: Buffer) => (webErr += d.toString()));
    await waitFor(async () => webErr.includes('enrolled'), 60_000, 'web enrolled');
    const webAddr = (await credentials('rweb')).address.ipv4;
    // The agent requests forever; only the revocation ends it. The launcher's stderr and the agent's stdout share
    // one pipe, so the output's order is the order of the writes.
    const client = execa('sh', ['-c', 'exec "$@" 2>&1', 'sh', process.execPath, CLI, '--state-dir', join(work.path, 'state-rclient'),
      'sandbox', 'start', '--name', 'rclient', '--rootfs', rootfs, '--control-plane', natsUrl, '--token', t, '--',
      'sh', '-c', `while true; do if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 ${webAddr} 8080 | grep -q alive; then echo ok; else echo fail; fi; sleep 0.2; done`,
    ], { reject: false });
    running.push(client);
    let out = '';
    client.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(async () => (out.match(/^ok$/gm) ?? []).length >= 3, 60_000, 'traffic before the revocation');
    const revokedAt = Date.now();
    const r = await lattice(cpState, ['agent', 'revoke', 'rclient', '--namespace', 'e2e-revoke', '--api', api]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const result = await client;
    console.log(`revocation -> launcher exit: ${Date.now() - revokedAt} ms`);
    expect(result.exitCode).not.toBe(0);
    const lines = out.split('\n');
    const revokedLine = lines.findIndex((l) => /revoked/.test(l));
    expect(revokedLine, out.slice(-2000)).toBeGreaterThan(0);
    // Once the launcher says it is revoked, at most a request already in flight completes.
    expect(lines.slice(revokedLine).filter((l) => l === 'ok').length).toBeLessThanOrEqual(1);

    const again = await lattice(join(work.path, 'state-rclient'), ['sandbox', 'start', '--name', 'rclient', '--rootfs', rootfs, '--', 'true']);
    expect(again.exitCode).not.toBe(0);
    expect(String(again.stderr)).toMatch(/revoked/);
  });

  it('the agent calls tools through its socket; each call is a span the control plane can query', async () => {
    const agentRootfs = join(work.path, 'rootfs-agent');
    await execa('cp', ['-a', rootfs, agentRootfs]);
    await execa('gcc', ['-static', '-O2', '-o', join(agentRootfs, 'bin', 'agentcall'), join(REPO, 'e2e/agentapi/fixtures/agentcall.c')]);
    const t = await token('e2e-tools', 1, ['--tools', 'get_policy,check_connectivity']);
    const sock = '/run/lattice/agent.sock';
    const r = await lattice(join(work.path, 'state-tools'), [
      'sandbox', 'start', '--name', 'tools', '--control-plane', natsUrl, '--token', t, '--rootfs', agentRootfs, '--', 'sh', '-c',
      `agentcall ${sock} POST /v1/tools/check_connectivity '{"ip":"10.77.0.9","port":8080}'; echo; agentcall ${sock} POST /v1/tools/request_egress '{}'`,
    ]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(r.stdout).toMatch(/"verdict":"allow".*"ruleId":"http"/);
    expect(r.stdout).toMatch(/403[\s\S]*tool not allowed/);
    const agentId = JSON.parse(await readFile(join(work.path, 'state-tools', 'credentials', 'tools.json'), 'utf8')).agentId as string;
    await waitFor(async () => {
      const q = await lattice(cpState, ['audit', 'traces', '--agent', agentId, '--json', '--api', api]);
      const text = String(q.stdout);
      return text.includes('check_connectivity') && text.includes('request_egress');
    }, 60_000, 'spans at the control plane');
  });

  it('an unreachable control plane is one line naming the URL, and nothing is stored', async () => {
    const port = await freePort();
    const state = join(work.path, 'state-nocp');
    const r = await lattice(state, ['sandbox', 'start', '--name', 'x', '--control-plane', `nats://127.0.0.1:${port}`, '--token', 'abc', '--rootfs', rootfs, '--', 'true']);
    expect(r.exitCode).toBe(125);
    const lines = String(r.stderr).trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`127.0.0.1:${port}`);
    const creds = await readFile(join(state, 'credentials', 'x.json'), 'utf8').catch(() => undefined);
    expect(creds).toBeUndefined();
  });
});
