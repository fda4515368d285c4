import { execa, type Options } from 'execa';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitFor } from './env.js';

/**
 * A real WireGuard peer for e2e tests: wireguard-go in its own netns, linked to the launcher's netns
 * by a veth pair, with busybox httpd servers on its overlay address. Everything lives in
 * namespaces and links the test creates, and stop() removes them.
 */
export interface WgPeer {
  netns: string;
  overlay: string;
  publicKey: string;
  endpoint: string;
  /** Run a command inside the peer's netns. */
  exec(args: string[], opts?: Options): ReturnType<typeof execa>;
  stop(): Promise<void>;
}

export async function genKeypair(): Promise<{ privateKey: string; publicKey: string }> {
  const privateKey = String((await execa('wg', ['genkey'])).stdout).trim();
  const publicKey = String((await execa('wg', ['pubkey'], { input: privateKey })).stdout).trim();
  return { privateKey, publicKey };
}

export async function startWgPeer(opts: {
  prefix: string;
  dir: string;
  /** The sandbox's WireGuard public key and its UDP port on the host side. */
  sandboxPublicKey: string;
  sandboxPort: number;
  /** Allowed IPs for the sandbox peer on this side (wider than its address tests spoofing). */
  sandboxAllowedIPs: string;
  overlay?: string;
  hostAddr?: string;
  peerAddr?: string;
  httpPorts?: number[];
}): Promise<WgPeer> {
  const netns = `${opts.prefix}-peer`;
  const hostIf = `${opts.prefix}-h`;
  const wgIf = `${opts.prefix}wg`;
  const overlay = opts.overlay ?? '10.77.0.10';
  const hostAddr = opts.hostAddr ?? '10.123.0.1';
  const peerAddr = opts.peerAddr ?? '10.123.0.2';
  const port = 51999;
  const keys = await genKeypair();
  const sh = (cmd: string[]) => execa(cmd[0]!, cmd.slice(1));
  const children: Array<ReturnType<typeof execa>> = [];
  const stop = async () => {
    for (const c of children) c.kill('SIGKILL');
    await Promise.allSettled(children);
    await execa('ip', ['link', 'del', hostIf], { reject: false });
    await execa('ip', ['netns', 'del', netns], { reject: false });
  };
  try {
    await stop();
    await sh(['ip', 'netns', 'add', netns]);
    await sh(['ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', `${opts.prefix}-p`, 'netns', netns]);
    await sh(['ip', 'addr', 'add', `${hostAddr}/30`, 'dev', hostIf]);
    await sh(['ip', 'link', 'set', hostIf, 'up']);
    await sh(['ip', '-n', netns, 'addr', 'add', `${peerAddr}/30`, 'dev', `${opts.prefix}-p`]);
    await sh(['ip', '-n', netns, 'link', 'set', `${opts.prefix}-p`, 'up']);
    await sh(['ip', '-n', netns, 'link', 'set', 'lo', 'up']);
    const wgGo = execa('ip', ['netns', 'exec', netns, 'wireguard-go', '-f', wgIf], { env: { WG_PROCESS_FOREGROUND: '1' }, reject: false });
    children.push(wgGo);
    await waitFor(async () => (await execa('ip', ['-n', netns, 'link', 'show', wgIf], { reject: false })).exitCode === 0);
    const keyFile = join(opts.dir, 'peer.key');
    await writeFile(keyFile, keys.privateKey + '\n', { mode: 0o600 });
    await sh([
      'ip', 'netns', 'exec', netns, 'wg', 'set', wgIf, 'private-key', keyFile, 'listen-port', String(port),
      'peer', opts.sandboxPublicKey, 'allowed-ips', opts.sandboxAllowedIPs, 'endpoint', `${hostAddr}:${opts.sandboxPort}`,
    ]);
    await sh(['ip', '-n', netns, 'addr', 'add', `${overlay}/24`, 'dev', wgIf]);
    await sh(['ip', '-n', netns, 'link', 'set', wgIf, 'up']);
    const www = join(opts.dir, 'www');
    await mkdir(www, { recursive: true });
    await writeFile(join(www, 'index.html'), 'hello from the peer\n');
    for (const p of opts.httpPorts ?? [8080]) {
      children.push(execa('ip', ['netns', 'exec', netns, 'busybox', 'httpd', '-f', '-p', `${overlay}:${p}`, '-h', www], { reject: false }));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    netns,
    overlay,
    publicKey: keys.publicKey,
    endpoint: `${peerAddr}:${port}`,
    exec: (args, o) => execa('ip', ['netns', 'exec', netns, ...args], { reject: false, ...o }),
    stop,
  };
}

export { waitFor };
