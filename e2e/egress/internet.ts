/**
 * A stand-in for the internet that never leaves the machine: a network namespace joined to the
 * launcher's by a veth, holding TEST-NET-3 addresses (203.0.113.10 and .11 serve HTTP on 443, .10
 * also UDP echo on 7, .12 answers DNS for example.test), routed from the launcher's namespace.
 * Every name carries a random suffix; stop() removes all of it.
 */
import { execa, type ResultPromise } from 'execa';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { REPO, waitFor, waitForListener } from '../support/env.js';

export const WEB = '203.0.113.10';
export const OTHER = '203.0.113.11';
export const DNS = '203.0.113.12';
const RANGE = '203.0.113.0/28';

export interface Internet {
  ns: string;
  /** The launcher-side address of the veth (a host address: host services live here). */
  hostAddr: string;
  events: Array<{ ev: string; [k: string]: unknown }>;
  stop(): Promise<void>;
}

export async function startInternet(): Promise<Internet> {
  const sfx = randomBytes(3).toString('hex');
  const ns = `ltinet-${sfx}`;
  const vh = `vh${sfx}`;
  const vi = `vi${sfx}`;
  const k = 1 + (randomBytes(1)[0]! % 60);
  const hostAddr = `198.51.100.${4 * k + 1}`;
  const nsAddr = `198.51.100.${4 * k + 2}`;
  const sh = (cmd: string) => execa('sh', ['-c', cmd]);
  let server: ResultPromise | undefined;
  const stop = async () => {
    server?.kill('SIGKILL');
    await server?.catch(() => undefined);
    await execa('ip', ['route', 'del', RANGE, 'via', nsAddr], { reject: false });
    await execa('ip', ['link', 'del', vh], { reject: false });
    await execa('ip', ['netns', 'del', ns], { reject: false });
  };
  try {
    await sh(
      [
        `ip netns add ${ns}`,
        `ip link add ${vh} type veth peer name ${vi} netns ${ns}`,
        `ip addr add ${hostAddr}/30 dev ${vh}`,
        `ip link set ${vh} up`,
        `ip -n ${ns} link set lo up`,
        `ip -n ${ns} addr add ${nsAddr}/30 dev ${vi}`,
        `ip -n ${ns} link set ${vi} up`,
        ...[WEB, OTHER, DNS].map((a) => `ip -n ${ns} addr add ${a}/32 dev lo`),
        `ip -n ${ns} route add default via ${hostAddr}`,
        `ip route add ${RANGE} via ${nsAddr}`,
      ].join(' && '),
    );
    const events: Internet['events'] = [];
    server = execa('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', join(REPO, 'e2e/egress/fixtures/internet.ts'), DNS, WEB, OTHER], {
      cwd: REPO,
      env: { NAMES: `api.example.test=${WEB},other.example.test=${OTHER}` },
      reject: false,
    });
    let buf = '';
    server.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        events.push(JSON.parse(buf.slice(0, i)) as Internet['events'][number]);
        buf = buf.slice(i + 1);
      }
    });
    let exited: string | undefined;
    void server.then((r) => (exited = String(r.stderr)));
    await waitFor(() => {
      if (exited !== undefined) throw new Error(`internet server exited: ${exited}`);
      return events.some((e) => e.ev === 'ready');
    }, 60_000, 'the internet server to be ready');
    for (const port of [443, 8000]) await waitForListener(ns, port);
    return { ns, hostAddr, events, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
