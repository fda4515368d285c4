import { execa, type ResultPromise } from 'execa';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { PrerequisiteError, LatticeError } from '../errors.js';

/** A nats-server child process with JetStream (loopback unless `host` says otherwise). */
export interface StartedNatsServer extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

export interface NatsServerOptions {
  /** JetStream store directory (kept across restarts). */
  storeDir: string;
  /** 0 picks a free port. */
  port?: number;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Write the server's configuration file for this port (operator mode, TLS: see auth.ts) and start with it. */
  writeConfig?: (listen: string) => Promise<string>;
  binary?: string;
}

/** Start nats-server and wait until it accepts connections. */
export async function startNatsServer(opts: NatsServerOptions): Promise<StartedNatsServer> {
  const binary = opts.binary ?? 'nats-server';
  await mkdir(opts.storeDir, { recursive: true, mode: 0o700 });
  const port = opts.port && opts.port > 0 ? opts.port : await freePort();
  const host = opts.host ?? '127.0.0.1';
  const listen = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const args = opts.writeConfig ? ['-c', await opts.writeConfig(listen)] : ['-a', host, '-p', String(port), '-js', '-sd', opts.storeDir];
  let child: ResultPromise;
  try {
    child = execa(binary, args, {
      reject: false,
      stdio: ['ignore', 'ignore', 'pipe'],
      cleanup: true,
    });
  } catch (err) {
    throw new PrerequisiteError(`cannot start ${binary}; install it with: apt-get install --no-install-recommends nats-server`, { cause: err });
  }
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = child.then((r) => r);
  const ready = await Promise.race([
    waitForPort(connectHost(host), port, 10_000).then(() => true),
    exited.then(() => false),
  ]);
  if (!ready) {
    const r = await exited;
    if ((r as { code?: string }).code === 'ENOENT' || /ENOENT/.test(String(r.message ?? ''))) {
      throw new PrerequisiteError(`${binary} not found; install it with: apt-get install --no-install-recommends nats-server`);
    }
    throw new LatticeError('ENATS_START', `nats-server exited at start: ${stderr.trim().split('\n').pop() ?? r.exitCode}`);
  }
  const stop = async () => {
    if (child.exitCode === null && !child.killed) child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  const h = connectHost(host);
  return { url: `nats://${h.includes(':') ? `[${h}]` : h}:${port}`, port, stop, [Symbol.asyncDispose]: stop };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Where to reach a server listening on `host` from this machine (a wildcard address: loopback). */
function connectHost(host: string): string {
  return host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
}

async function waitForPort(host: string, port: number, timeoutMs: number): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, host);
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new LatticeError('ENATS_START', `nats-server did not listen on ${host}:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
