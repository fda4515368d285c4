import { ManualClock } from '../../src/clock.js';
import { MemoryNetwork } from '../../src/conn/memory.js';
import { Device, type DeviceOptions } from '../../src/wg/device.js';
import { SodiumCrypto } from '../../src/wg/crypto.js';
import type { Peer } from '../../src/wg/peer.js';
import { parseIpBytes } from '../../src/net/addr.js';

export const crypto = new SodiumCrypto();

/** A minimal IPv4 (or IPv6) packet with `payload` from src to dst (UDP protocol number, no checksum). */
export function ipPacket(src: string, dst: string, payload: Uint8Array = new Uint8Array(8)): Uint8Array {
  const s = parseIpBytes(src)!;
  const d = parseIpBytes(dst)!;
  if (s.length === 4) {
    const p = new Uint8Array(20 + payload.length);
    p[0] = 0x45;
    p[2] = p.length >> 8;
    p[3] = p.length & 0xff;
    p[8] = 64;
    p[9] = 17;
    p.set(s, 12);
    p.set(d, 16);
    p.set(payload, 20);
    return p;
  }
  const p = new Uint8Array(40 + payload.length);
  p[0] = 0x60;
  p[4] = payload.length >> 8;
  p[5] = payload.length & 0xff;
  p[6] = 17;
  p[7] = 64;
  p.set(s, 8);
  p.set(d, 24);
  p.set(payload, 40);
  return p;
}

export interface Side {
  dev: Device;
  priv: Uint8Array;
  pub: Uint8Array;
  received: { packet: Uint8Array; peer: Peer }[];
  addr: { address: string; port: number };
}

/**
 * Two devices on a memory network: A = 10.0.0.1 / fd00::1 at 192.0.2.1:51820, B = 10.0.0.2 / fd00::2 at
 * 192.0.2.2:51820. Each knows the other's endpoint unless `bKnowsA` is false.
 */
export function makePair(opts: { psk?: boolean; bKnowsA?: boolean; device?: Partial<DeviceOptions> } = {}) {
  const clock = new ManualClock();
  const net = new MemoryNetwork();
  const psk = opts.psk ? crypto.randomBytes(32) : undefined;
  const mk = (address: string): Side => {
    const priv = crypto.generatePrivateKey();
    const bind = net.bind(address, 51820);
    const dev = new Device({ privateKey: priv, bind, clock, crypto, ...opts.device });
    const received: Side['received'] = [];
    dev.attach((packet, peer) => received.push({ packet: Uint8Array.from(packet), peer }));
    dev.up();
    return { dev, priv, pub: crypto.publicKey(priv), received, addr: { address, port: 51820 } };
  };
  const a = mk('192.0.2.1');
  const b = mk('192.0.2.2');
  a.dev.addPeer({ publicKey: b.pub, presharedKey: psk, allowedIPs: ['10.0.0.2/32', 'fd00::2/128'], endpoint: b.addr });
  b.dev.addPeer({
    publicKey: a.pub,
    presharedKey: psk,
    allowedIPs: ['10.0.0.1/32', 'fd00::1/128'],
    endpoint: opts.bKnowsA === false ? undefined : a.addr,
  });
  /** Advance the clock, fire timers on both devices, deliver everything. */
  const step = (ms: number) => {
    clock.advance(ms);
    a.dev.tick();
    b.dev.tick();
    net.flush();
  };
  return { clock, net, a, b, psk, step };
}

export const AtoB = () => ipPacket('10.0.0.1', '10.0.0.2', new TextEncoder().encode('hello from a'));
export const BtoA = () => ipPacket('10.0.0.2', '10.0.0.1', new TextEncoder().encode('hello from b'));
