import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import Docker from 'dockerode';
import { MissingComponentError } from '../support/env.js';

export interface DockerdHandle {
  docker: Docker;
  /** True when this helper started dockerd (and so stops it). */
  started: boolean;
  stop(): Promise<void>;
}

const SOCKET = '/var/run/docker.sock';

async function answers(docker: Docker): Promise<boolean> {
  try {
    await docker.ping();
    return true;
  } catch {
    return false;
  }
}

/**
 * Use the running dockerd if /var/run/docker.sock answers; else start `dockerd` (default settings)
 * as a child, wait for its socket, and stop it afterwards. Fails (MissingComponentError) when it cannot be had.
 */
export async function ensureDockerd(logFile: string): Promise<DockerdHandle> {
  const docker = new Docker({ socketPath: SOCKET });
  if (await answers(docker)) return { docker, started: false, stop: async () => undefined };
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn('dockerd', [], { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  let exited = false;
  child.on('exit', () => (exited = true));
  child.on('error', () => (exited = true));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && !exited) {
    if (await answers(docker)) {
      return {
        docker,
        started: true,
        stop: async () => {
          if (exited) return;
          const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
          await gone;
          clearTimeout(t);
        },
      };
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  if (!exited) child.kill('SIGKILL');
  throw new MissingComponentError('a running dockerd', `run: make setup (docker.io); dockerd's log: ${logFile}`);
}
