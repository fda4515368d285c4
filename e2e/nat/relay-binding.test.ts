/**
 * The TCP relay binds a peer id to its holder (issue #12): `lattice relay serve` (the built CLI, a real
 * TCP listener) with per-peer credentials from `lattice relay credential`. A peer holding a valid
 * credential for its own id cannot claim another's: the relay closes that connection, counts it and logs
 * a `relay.claim_refused` warning; the owner's relayed traffic keeps flowing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RelayClient } from '../../src/nat/relay-client.js';
import { CLI, tempDir, waitFor } from '../support/env.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function cli(args: string[]): Promise<string> {
  const r = await execa(process.execPath, [CLI, ...args], { reject: false, stdin: 'ignore' });
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return String(r.stdout).trim();
}

async function startRelay(): Promise<{ url: string; secretFile: string; stderr: () => string; child: ResultPromise }> {
  const dir = await tempDir('ltrelay-');
  cleanups.push(() => dir.remove());
  const secretFile = join(dir.path, 'secret');
  await writeFile(secretFile, await cli(['relay', 'secret']), { mode: 0o600 });
  const child = execa(process.execPath, [CLI, 'relay', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secretFile], {
    reject: false,
    stdin: 'ignore',
    env: { LATTICE_LOG_FORMAT: 'json', LATTICE_LOG_LEVEL: 'info' },
  });
  cleanups.push(async () => {
    child.kill('SIGTERM');
    await child;
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await waitFor(() => /relay listening on (tcp:\/\/\S+)/.test(out), 60_000, `relay serve (${err.slice(-300)})`);
  return { url: /relay listening on (tcp:\/\/\S+)/.exec(out)![1], secretFile, stderr: () => err, child };
}

describe('relay peer-id binding (lattice relay serve)', () => {
  it("refuses a claim of another peer's id made with a valid credential of one's own; the owner's traffic flows", async () => {
    const relay = await startRelay();
    const cred = (id: string) => cli(['relay', 'credential', id, '--secret-file', relay.secretFile]);
    const alice = new RelayClient({ url: relay.url, selfId: 'alice', token: await cred('alice') });
    const bob = new RelayClient({ url: relay.url, selfId: 'bob', token: await cred('bob') });
    const mallory = new RelayClient({ url: relay.url, selfId: 'alice', token: await cred('mallory'), minBackoffMs: 60_000 });
    cleanups.push(() => alice.close(), () => bob.close(), () => mallory.close());
    const toAlice: [string, number[]][] = [];
    const toMallory: [string, number[]][] = [];
    alice.attach((from, p) => toAlice.push([from, [...p]]));
    mallory.attach((from, p) => toMallory.push([from, [...p]]));
    alice.start();
    bob.start();
    await Promise.all([alice.ready(), bob.ready()]);
    alice.send('alice', new Uint8Array([0])); // comes back once the relay has taken alice's Hello
    await waitFor(() => toAlice.length === 1, 60_000, "alice's own id works");

    mallory.start();
    await waitFor(() => relay.stderr().includes('relay.claim_refused'), 60_000, 'the refused claim in the relay log');
    const line = relay.stderr().split('\n').find((l) => l.includes('relay.claim_refused'))!;
    expect(JSON.parse(line)).toMatchObject({ event: 'relay.claim_refused', claimedId: 'alice', taken: true, level: 40 });
    expect(line).not.toContain(await cred('mallory'));

    // Bob's datagrams for "alice" still reach alice, and only her.
    bob.send('alice', new Uint8Array([1, 2, 3]));
    await waitFor(() => toAlice.length === 2, 60_000, 'relayed traffic to alice');
    expect(toAlice[1]).toEqual(['bob', [1, 2, 3]]);
    expect(toMallory).toEqual([]);
    expect(alice.stats.connects).toBe(1);

    // The counters, printed on stop.
    relay.child.kill('SIGTERM');
    await relay.child;
    const stop = relay.stderr().split('\n').find((l) => l.includes('relay stopping'))!;
    expect((JSON.parse(stop) as { stats: { refusedClaims: number; forwarded: number } }).stats).toMatchObject({ refusedClaims: 1 });
  }, 120_000);

  it('serve without a usable secret exits non-zero with a one-line fix', async () => {
    const r = await execa(process.execPath, [CLI, 'relay', 'serve', '--listen', '127.0.0.1:0'], { reject: false, stdin: 'ignore', env: { LATTICE_RELAY_SECRET: 'short' } });
    expect(r.exitCode).not.toBe(0);
    expect(String(r.stderr)).toMatch(/relay secret is not base64 of at least 32 bytes/);
  });
});
