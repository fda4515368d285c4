/**
 * Prometheus /metrics of the control plane (its HTTP API) and of launchers (`sandbox start --metrics`):
 * the text parses as the exposition format, and the figures move when enrollments happen and traffic flows.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { type ResultPromise } from 'execa';
import { readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { requireBinary, tempDir, busyboxRootfs, lattice } from '../support/env.js';
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from '../support/control-plane.js';
import { waitFor } from '../support/wgpeer.js';
import { freePort } from '../../src/natsserver/server.js';
import { scrape, valueOf, type Sample } from './prometheus.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let cp: EmbeddedControlPlane | undefined;
let natsUrl: string;
let api: string;
let cpState: string;
const running: ResultPromise[] = [];
const SCRAPE_TOKEN = randomBytes(24).toString('hex');

const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [{ id: 'http', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' }],
  ingress: [{ id: 'http-in', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' }],
};

beforeAll(async () => {
  for (const bin of ['runsc', 'nats-server']) await requireBinary(bin);
  work = await tempDir('lt-e2e-metrics');
  rootfs = await busyboxRootfs(work.path);
  cpState = join(work.path, 'cp');
  await writeFile(join(work.path, 'scrape-token'), `${SCRAPE_TOKEN}\n`, { mode: 0o600 });
  cp = await startEmbeddedControlPlane(cpState, { args: ['--metrics-token-file', join(work.path, 'scrape-token')] });
  ({ natsUrl, api } = cp);
});

afterAll(async () => {
  for (const c of running) c.kill('SIGTERM');
  await Promise.allSettled(running);
  await cp?.stop();
  await work?.remove();
});

/** Scrape until `cond` holds on the samples (the event itself); returns those samples. */
async function scrapeUntil(url: string, cond: (s: Sample[]) => boolean, what: string): Promise<Sample[]> {
  let last: Sample[] = [];
  await waitFor(async () => cond((last = await scrape(url, url === `${api}/metrics` ? SCRAPE_TOKEN : undefined))), 90_000, what);
  return last;
}

describe('GET /metrics', () => {
  it('control plane and launchers: Prometheus text whose figures move with enrollments and traffic', async () => {
    const cpMetrics = `${api}/metrics`;
    // Never public: no token or a wrong one is 401; the scrape token (--metrics-token-file) reads it.
    for (const headers of [{}, { authorization: 'Bearer not-the-scrape-token' }, { authorization: `Basic ${SCRAPE_TOKEN}` }] as Record<string, string>[]) {
      const res = await fetch(cpMetrics, { headers });
      expect(res.status).toBe(401);
      expect(await res.text()).not.toContain('lattice_cp_');
    }
    const before = await scrape(cpMetrics, SCRAPE_TOKEN);
    const enrolledBefore = valueOf(before, 'lattice_cp_enrollments_total', { result: 'ok' });
    expect(enrolledBefore).toBe(0);
    expect(valueOf(before, 'lattice_cp_replicas')).toBe(1);
    expect(valueOf(before, 'lattice_process_cpu_user_seconds_total')).toBeGreaterThan(0);

    const policy = join(work.path, 'policy.json');
    await writeFile(policy, JSON.stringify(POLICY));
    const tr = await lattice(cpState, ['token', 'create', '--namespace', 'metrics', '--limit', '2', '--policy', policy, '--api', api]);
    expect(tr.exitCode, String(tr.stderr)).toBe(0);
    const t = String(tr.stdout).trim();

    const webPort = await freePort();
    const webMetrics = `http://127.0.0.1:${webPort}/metrics`;
    const web = lattice(join(work.path, 'state-web'), ['sandbox', 'start', '--name', 'web', '--rootfs', rootfs, '--control-plane', natsUrl, '--token', t, '--metrics', `127.0.0.1:${webPort}`, '--',
      'sh', '-c', 'mkdir -p /tmp/w && echo hello > /tmp/w/index.html && httpd -f -p 8080 -h /tmp/w']);
    running.push(web);
    let webErr = '';
    web.stderr?.on('data', (d: Buffer) => (webErr += d.toString()));
    await waitFor(async () => webErr.includes('enrolled'), 60_000, 'web enrolled');
    const webAddr = (JSON.parse(await readFile(join(work.path, 'state-web', 'credentials', 'web.json'), 'utf8')) as { address: { ipv4: string } }).address.ipv4;

    // The client requests until the test ends.
    const client = lattice(join(work.path, 'state-client'), ['sandbox', 'start', '--name', 'client', '--rootfs', rootfs, '--control-plane', natsUrl, '--token', t, '--',
      'sh', '-c', `while true; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${webAddr} 8080 >/dev/null; sleep 0.2; done`]);
    running.push(client);
    await waitFor(async () => {
      try {
        return JSON.parse(await readFile(join(work.path, 'state-client', 'credentials', 'client.json'), 'utf8')) !== null;
      } catch {
        return false;
      }
    }, 60_000, 'client enrolled');
    const clientKey = (JSON.parse(await readFile(join(work.path, 'state-client', 'credentials', 'client.json'), 'utf8')) as { publicKey: string }).publicKey;

    const peer = { peer: clientKey };
    const first = await scrapeUntil(webMetrics, (s) => (valueOf(s, 'lattice_wg_peer_received_bytes_total', peer) ?? 0) > 0 && (valueOf(s, 'lattice_policy_decisions_total', { verdict: 'allow' }) ?? 0) > 0, 'traffic from the client in the web launcher\'s metrics');
    const rx1 = valueOf(first, 'lattice_wg_peer_received_bytes_total', peer)!;
    const tx1 = valueOf(first, 'lattice_wg_peer_sent_bytes_total', peer)!;
    const allowed1 = valueOf(first, 'lattice_policy_decisions_total', { verdict: 'allow' })!;
    const age = valueOf(first, 'lattice_wg_peer_handshake_age_seconds', peer)!;
    expect(age).toBeGreaterThanOrEqual(0);
    expect(valueOf(first, 'lattice_pump_packets_total', { direction: 'ingress' })).toBeGreaterThan(0);
    for (const reason of ['denied', 'malformed']) expect(valueOf(first, 'lattice_pump_dropped_packets_total', { reason })).toBeGreaterThanOrEqual(0);
    expect(valueOf(first, 'lattice_wg_dropped_packets_total', { reason: 'decrypt' })).toBeGreaterThanOrEqual(0);
    expect(valueOf(first, 'lattice_audit_outbox_depth_events')).toBeGreaterThanOrEqual(0);

    // Traffic keeps flowing: the counters move.
    const later = await scrapeUntil(
      webMetrics,
      (s) => valueOf(s, 'lattice_wg_peer_received_bytes_total', peer)! > rx1 && valueOf(s, 'lattice_wg_peer_sent_bytes_total', peer)! > tx1 && valueOf(s, 'lattice_policy_decisions_total', { verdict: 'allow' })! > allowed1,
      'the web launcher\'s counters to move',
    );
    // Each accepted connection was audited (flow.opened) and acknowledged by JetStream: the lag histogram counts them.
    await scrapeUntil(webMetrics, (s) => (valueOf(s, 'lattice_audit_publish_lag_seconds_count') ?? 0) > 0 && valueOf(s, 'lattice_audit_published_total', { outcome: 'acked' })! > 0, 'audit acknowledgements');
    expect(valueOf(later, 'lattice_audit_publisher_connected')).toBe(1);

    const after = await scrape(cpMetrics, SCRAPE_TOKEN);
    expect(valueOf(after, 'lattice_cp_enrollments_total', { result: 'ok' })).toBe(2);
    expect(valueOf(after, 'lattice_cp_tokens_created_total')).toBe(1);
  });

  it('--metrics with a taken port: the launcher exits non-zero before enrolling (the token stays unused)', async () => {
    const tr = await lattice(cpState, ['token', 'create', '--namespace', 'metrics2', '--limit', '1', '--api', api]);
    const t = String(tr.stdout).trim();
    const bad = await lattice(join(work.path, 'state-bad'), ['sandbox', 'start', '--name', 'bad', '--rootfs', rootfs, '--control-plane', natsUrl, '--token', t, '--metrics', `127.0.0.1:${new URL(api).port}`, '--', 'true']);
    expect(bad.exitCode).not.toBe(0);
    expect(String(bad.stderr)).toMatch(/cannot serve metrics on 127\.0\.0\.1:\d+/);
    const ok = await lattice(join(work.path, 'state-bad'), ['sandbox', 'start', '--name', 'bad', '--rootfs', rootfs, '--control-plane', natsUrl, '--token', t, '--', 'true']);
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
  });
});
