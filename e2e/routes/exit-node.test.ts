/**
 * An exit node with real components: `lattice up --exit-node` in one network namespace, the test's
 * "internet" (TEST-NET-3) behind it, a gVisor sandbox started with `--exit-node exit` on another host.
 *
 *   ns <p>-pub: br0 198.18.0.1/24        nats-server :4222, control plane (admin API on its loopback)
 *   ns <p>-r:   eth0 198.18.0.21, wan0 198.51.100.1/30   `lattice up --name exit --exit-node`
 *   ns <p>-s:   eth0 198.51.100.2/30, lo 203.0.113.10 .11 .12 .13   busybox httpd :443 (the "internet");
 *               a DNS server on .12 (e2e/egress/fixtures/internet.ts): api.example.test -> .13, other.example.test -> .11
 *   ns <p>-b:   eth0 198.18.0.22         `lattice sandbox start --exit-node exit` (no route of its own to
 *               203.0.113.0/24, and a resolver that knows none of these names)
 *
 * Proven: once the exit routes are approved, the sandbox reaches 203.0.113.10 (a CIDR rule) and
 * api.example.test (a domain rule; resolved by the exit node's DNS forwarder through the tunnel, which
 * asks the internet's DNS server) through the exit node, and the server sees the exit node's address;
 * 203.0.113.11 (no rule) is refused and audited as denied, other.example.test (no rule) is answered
 * NXDOMAIN, audited as dns.refused, and never asked upstream; the exit node's own policy saw the DNS
 * flow. Waits are on events (output lines), never sleeps.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { busyboxRootfs, waitFor } from '../support/env.js';
import { startLab, startInternet, startExitNode, wireInternet, collect, NATS, EXIT_POLICY, type Lab } from './lab.js';

const NS = 'lte';
let lab: Lab;

beforeAll(async () => {
  lab = await startLab(`lte${randomBytes(2).toString('hex')}`, 8473, wireInternet);
}, 180_000);

afterAll(async () => lab?.stop(), 60_000);

describe('exit node', () => {
  it('a sandbox reaches an address and a domain rule\'s name through the exit node (source: the exit node, DNS through the tunnel), other names and addresses are refused and audited', async () => {
    const policyFile = join(lab.work, 'policy.json');
    await writeFile(policyFile, JSON.stringify(EXIT_POLICY));
    const tk = await lab.admin(['token', 'create', '--namespace', NS, '--limit', '4', '--policy', policyFile]);
    expect(tk.exitCode, String(tk.stderr)).toBe(0);
    const token = String(tk.stdout).trim();
    const { httpdLog, asked } = await startInternet(lab);
    const auditR = join(lab.work, 'audit-r.ndjson');
    const { up, upErr } = await startExitNode(lab, NS, token, ['--audit-log', auditR]);

    const rootfs = await busyboxRootfs(lab.work);
    const get = (addr: string) => `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${addr} 443 | grep hello-from-internet`;
    const script = [
      `until ${get('203.0.113.10')}; do sleep 0.3; done`,
      'echo REACHED',
      `if ${get('api.example.test')}; then echo NAME-REACHED; else echo NAME-FAILED; fi`,
      `if nslookup other.example.test; then echo OTHERNAME-RESOLVED; else echo OTHERNAME-REFUSED; fi`,
      `if ${get('203.0.113.11')}; then echo OTHER-REACHED; else echo OTHER-REFUSED; fi`,
    ].join('\n');
    const audit = join(lab.work, 'audit-b.ndjson');
    const sbx = lab.inNs(lab.b, 'state-b', ['sandbox', 'start', '--name', 'sbx', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.22', '--exit-node', 'exit', '--audit-log', audit, '--rootfs', rootfs, '--', 'sh', '-c', script]);
    lab.children.push(sbx);
    const out = collect(sbx, 'stdout');
    const err = collect(sbx, 'stderr');
    await waitFor(() => /OTHER-(REACHED|REFUSED)/.test(out()), 120_000, `the sandbox trying both addresses (sandbox: ${out().slice(-300)} ${err().slice(-400)} / up: ${upErr().slice(-600)})`);
    expect(out()).toContain('REACHED');
    expect(out()).toContain('OTHER-REFUSED');
    expect(out()).toContain('NAME-REACHED');
    expect(out()).toContain('OTHERNAME-REFUSED');
    // The allowed name was asked upstream (through the tunnel and the exit node), the refused one never.
    expect(asked()).toContain('api.example.test');
    expect(asked()).not.toContain('other.example.test');
    // Source NAT: the internet saw the exit node's address (for .10 and for api.example.test's .13).
    expect(httpdLog()).toContain('198.51.100.1');
    expect(httpdLog()).not.toMatch(/10\.77\.\d+\.\d+/);
    expect(httpdLog()).not.toContain('198.18.0.22');
    // The refused address is audited at the sandbox's launcher with its verdict.
    const events = (await readFile(audit, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events).toContainEqual(expect.objectContaining({ type: 'flow.opened', dstIp: '203.0.113.11', verdict: 'denied' }));
    expect(events).toContainEqual(expect.objectContaining({ type: 'flow.opened', dstIp: '203.0.113.10', verdict: 'allowed' }));
    // The domain rule: answered through the tunnel, the flow to its address allowed by that rule.
    expect(events).toContainEqual(expect.objectContaining({ type: 'dns.answered', name: 'api.example.test', answers: ['203.0.113.13'] }));
    expect(events).toContainEqual(expect.objectContaining({ type: 'flow.opened', dstIp: '203.0.113.13', verdict: 'allowed', ruleId: 'api' }));
    expect(events).toContainEqual(expect.objectContaining({ type: 'dns.refused', name: 'other.example.test' }));
    // The exit node's own policy saw the DNS query as an ingress flow to its overlay address.
    const exitEvents = (await readFile(auditR, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(exitEvents).toContainEqual(expect.objectContaining({ type: 'flow.opened', direction: 'ingress', proto: 'udp', dstPort: 53, verdict: 'allowed', ruleId: 'exit-dns' }));
    await sbx;

    // The namespace's default exit node, set by an operator: a sandbox that names none leaves through it
    // (DNS included); opting out with --exit-node none is refused while the operator does not allow it.
    const set = await lab.admin(['namespace', 'set', NS, '--exit-node', 'exit']);
    expect(set.exitCode, String(set.stderr)).toBe(0);
    expect(String(set.stdout)).toContain(`namespace ${NS}: default exit node exit`);
    const byDefault = lab.inNs(lab.b, 'state-b', ['sandbox', 'start', '--name', 'sbx2', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.22', '--rootfs', rootfs, '--', 'sh', '-c', `until ${get('api.example.test')}; do sleep 0.3; done; echo DEFAULT-REACHED`]);
    lab.children.push(byDefault);
    const out2 = collect(byDefault, 'stdout');
    const err2 = collect(byDefault, 'stderr');
    await waitFor(() => out2().includes('DEFAULT-REACHED'), 120_000, `the sandbox without --exit-node reaching api.example.test (${err2().slice(-600)})`);
    expect((await byDefault).exitCode).toBe(0);
    const optOut = await lab.inNs(lab.b, 'state-b', ['sandbox', 'start', '--name', 'sbx3', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.22', '--exit-node', 'none', '--rootfs', rootfs, '--', 'true']);
    expect(optOut.exitCode).not.toBe(0);
    expect(String(optOut.stderr)).toContain(`does not allow --exit-node none`);

    const down = await lab.inNs(lab.r, 'state-r', ['down', '--name', 'exit']);
    expect(down.exitCode, String(down.stderr)).toBe(0);
    expect((await up).exitCode, upErr().slice(-800)).toBe(0);
    expect(String((await execa('ip', ['netns', 'exec', lab.r, 'nft', 'list', 'tables'])).stdout)).not.toContain('lattice');
  }, 300_000);
});
