import { execa, type ResultPromise } from 'execa';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, StorageType } from 'nats';
import { freePort } from '../../src/natsserver/server.js';

/**
 * A 3-node (or n-node) nats-server cluster with JetStream on loopback ports, for failover tests.
 * Every node has its own client port, route port and store directory under `dir`; `kill(i)` sends
 * SIGKILL (a crash: no lame-duck, no flush), `start(i)` brings the same node back with its store.
 */
export interface NatsCluster extends AsyncDisposable {
  readonly urls: string[];
  readonly size: number;
  /** SIGKILL node i and wait for the process to be gone. */
  kill(i: number): Promise<void>;
  /** (Re)start node i and wait until it accepts client connections. */
  start(i: number): Promise<void>;
  /** Wait until JetStream answers through the given nodes (a meta leader is elected). */
  waitJetStream(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
  /** The lines of every node's log (`n<i>: line`) that match `pattern`. */
  logs(pattern: RegExp): Promise<string[]>;
}

export async function startNatsCluster(dir: string, size = 3, binary = 'nats-server'): Promise<NatsCluster> {
  const clientPorts: number[] = [];
  const routePorts: number[] = [];
  for (let i = 0; i < size; i++) {
    clientPorts.push(await freePort());
    routePorts.push(await freePort());
  }
  const procs: (ResultPromise | undefined)[] = new Array(size).fill(undefined);
  const confs: string[] = [];
  for (let i = 0; i < size; i++) {
    const store = join(dir, `n${i}`);
    await mkdir(store, { recursive: true });
    const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`).join(', ');
    const conf = join(dir, `n${i}.conf`);
    await writeFile(
      conf,
      [
        `server_name: n${i}`,
        `listen: 127.0.0.1:${clientPorts[i]}`,
        `jetstream { store_dir: "${store}" }`,
        // The server's own log, appended across restarts: what a failing failover test is read against.
        `log_file: "${join(dir, `n${i}.log`)}"`,
        `cluster { name: lattice-test, listen: 127.0.0.1:${routePorts[i]}, routes: [${routes}] }`,
        '',
      ].join('\n'),
    );
    confs.push(conf);
  }
  const urls = clientPorts.map((p) => `nats://127.0.0.1:${p}`);
  const start = async (i: number) => {
    const child = execa(binary, ['-c', confs[i]], { reject: false, stdio: ['ignore', 'ignore', 'ignore'], cleanup: true });
    procs[i] = child;
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const nc = await connect({ servers: urls[i], reconnect: false, timeout: 2000 });
        await nc.close();
        return;
      } catch (err) {
        if (child.exitCode !== null) throw new Error(`nats-server n${i} exited at start`, { cause: err });
        if (Date.now() > deadline) throw new Error(`nats-server n${i} did not accept connections within 30 s`, { cause: err });
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const kill = async (i: number) => {
    const c = procs[i];
    if (!c) return;
    c.kill('SIGKILL');
    await c;
    procs[i] = undefined;
  };
  const waitJetStream = async (timeoutMs = 60_000) => {
    const nc = await connect({ servers: urls, timeout: 2000 });
    const deadline = Date.now() + timeoutMs;
    try {
      for (;;) {
        try {
          const jsm = await nc.jetstreamManager({ timeout: 2000 });
          await jsm.getAccountInfo();
          // Every node has joined the meta group once a stream with one replica per node can be placed.
          const probe = `CLUSTER_PROBE_${process.pid}`;
          await jsm.streams.add({ name: probe, subjects: [`cluster.probe.${process.pid}`], num_replicas: size, storage: StorageType.Memory });
          await jsm.streams.delete(probe);
          return;
        } catch (err) {
          if (Date.now() > deadline) throw new Error('JetStream of the cluster did not answer in time', { cause: err });
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    } finally {
      await nc.close();
    }
  };
  const stop = async () => {
    for (let i = 0; i < size; i++) await kill(i);
  };
  try {
    await Promise.all(Array.from({ length: size }, (_, i) => start(i)));
  } catch (err) {
    await stop();
    throw err;
  }
  const logs = async (pattern: RegExp) => {
    const out: string[] = [];
    for (let i = 0; i < size; i++) {
      const text = await readFile(join(dir, `n${i}.log`), 'utf8').catch(() => '');
      for (const line of text.split('\n')) if (pattern.test(line)) out.push(`n${i}: ${line}`);
    }
    return out;
  };
  return { urls, size, kill, start, waitJetStream, stop, logs, [Symbol.asyncDispose]: stop };
}
