import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { x25519PublicKey } from '../../src/controlplane/possession.js';

export const ROOT = new URL('../../', import.meta.url).pathname;
export const wgKey = () => randomBytes(32).toString('base64');
/** A real X25519 key pair (base64), for tests that must prove possession of the private key. */
export function wgKeyPair(): { privateKey: string; publicKey: string } {
  const priv = randomBytes(32);
  return { privateKey: priv.toString('base64'), publicKey: x25519PublicKey(priv).toString('base64') };
}

export async function tempDir(tag: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `ltcp-${tag}-`));
}

export async function withNats(dir: string): Promise<StartedNatsServer> {
  return startNatsServer({ storeDir: join(dir, 'nats'), port: 0 });
}

export async function cleanup(...dirs: string[]): Promise<void> {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
}

/** Run the CLI as its own process (node + tsx loader, no npx layers, so signals reach it). */
export function cli(args: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), ...args], {
    cwd: ROOT,
    env: { ...process.env, LATTICE_LOG_LEVEL: 'error', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export async function cliRun(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = cli(args, env);
  let stdout = '';
  let stderr = '';
  p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number>((r) => p.on('close', (c) => r(c ?? -1)));
  return { code, stdout, stderr };
}

/** Start `lattice control-plane start --json ...` as a child and wait for its first stdout line. */
export async function startCpProcess(args: string[]): Promise<{ proc: ChildProcess; info: { nats: string; http: string | null; clusterId: string }; stop(): Promise<void> }> {
  const proc = cli(['control-plane', 'start', '--json', ...args]);
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const rl = createInterface({ input: proc.stdout! });
  const line = await new Promise<string>((resolve, reject) => {
    rl.once('line', resolve);
    proc.once('exit', (c) => reject(new Error(`control plane exited ${c}: ${stderr}`)));
    setTimeout(() => reject(new Error(`control plane did not start in 30 s: ${stderr}`)), 30_000).unref();
  });
  const stop = async () => {
    if (proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  return { proc, info: JSON.parse(line) as { nats: string; http: string | null; clusterId: string }, stop };
}

/** The next `ev` from `emitter`, or a rejection after `ms` (a safety net against a hang). */
export function nextEvent<T>(emitter: { once(ev: string, fn: (v: T) => void): unknown }, ev: string, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${ev} within ${ms} ms`)), ms);
    emitter.once(ev, (v: T) => {
      clearTimeout(t);
      resolve(v);
    });
  });
}
