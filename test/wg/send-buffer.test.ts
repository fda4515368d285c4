/**
 * The send path seals into the device's one reused buffer when the Bind copies on send (Bind.sendCopies),
 * and into a fresh buffer per message when the Bind may keep it. Either way every byte on the wire is right:
 * header, ciphertext of the packet followed by zero padding, tag.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import type { Bind, Endpoint } from '../../src/conn/bind.js';
import { MemoryNetwork, type MemoryBind } from '../../src/conn/memory.js';
import { Device } from '../../src/wg/device.js';
import { MessageTransportHeaderSize, MessageTransportOffsetCounter, MessageTransportOffsetReceiver, MessageType } from '../../src/wg/constants.js';
import { seededRandom, type TestRandom } from '../support/random.js';
import { crypto, ipPacket, makePair } from './helpers.js';

/** Random IPv4 packets A -> B, sizes across the padding boundaries: long ones followed by short ones. */
function packets(r: TestRandom, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const size = i % 2 === 0 ? 1000 + r.int(380) : r.int(40);
    out.push(ipPacket('10.0.0.1', '10.0.0.2', r.bytes(size)));
  }
  return out;
}

/** Decrypt a transport message with B's receiving key and check framing and zero padding. */
function expectSealed(msg: Uint8Array, key: Uint8Array, receiver: number, plain: Uint8Array): void {
  const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  expect(msg[0]).toBe(MessageType.Transport);
  expect([msg[1], msg[2], msg[3]]).toEqual([0, 0, 0]);
  expect(view.getUint32(MessageTransportOffsetReceiver, true)).toBe(receiver);
  const counter = Number(view.getBigUint64(MessageTransportOffsetCounter, true));
  const opened = crypto.open(key, counter, msg.subarray(MessageTransportHeaderSize), null);
  expect(opened).not.toBeNull();
  expect(opened!.length % 16).toBe(0);
  expect(Buffer.from(opened!.subarray(0, plain.length)).equals(Buffer.from(plain))).toBe(true);
  expect(opened!.subarray(plain.length).every((b) => b === 0)).toBe(true);
}

describe('send buffer', () => {
  it('a copying Bind: every message from the reused buffer decrypts to the packet and zero padding', () => {
    const r = seededRandom();
    const { a, b, net } = makePair();
    expect((a.dev.bind as MemoryBind).sendCopies).toBe(true);
    const sent = packets(r, 40);
    a.dev.sendPacket(sent[0]);
    net.flush();
    const before = net.log.length;
    for (const p of sent.slice(1)) a.dev.sendPacket(p);
    net.flush();
    const kp = b.dev.sessionState(a.pub)!.current!;
    const wire = net.log.slice(before).filter((d) => d.from.address === '192.0.2.1' && d.data[0] === MessageType.Transport);
    expect(wire.length).toBe(sent.length - 1);
    wire.forEach((d, i) => expectSealed(d.data, kp.receive, kp.localIndex, sent[i + 1]));
    expect(b.received.map((x) => Buffer.from(x.packet).toString('hex'))).toEqual(sent.map((p) => Buffer.from(p).toString('hex')));
    expect(b.dev.droppedTotal()).toBe(0);
  });

  it('a Bind that keeps what it is given gets a buffer of its own for each message', () => {
    const r = seededRandom();
    const net = new MemoryNetwork();
    const clock = new ManualClock();
    /** Keeps every buffer it is handed (no copy), as a queueing transport would, and forwards it. */
    class KeepingBind implements Bind {
      readonly kept: Uint8Array[] = [];
      constructor(private readonly inner: MemoryBind) {}
      get port(): number {
        return this.inner.port;
      }
      start(onDatagram: (data: Uint8Array, from: Endpoint) => void): void {
        this.inner.start(onDatagram);
      }
      send(data: Uint8Array, to: Endpoint): void {
        this.kept.push(data);
        this.inner.send(data, to);
      }
      close(): Promise<void> {
        return this.inner.close();
      }
    }
    const keeping = new KeepingBind(net.bind('192.0.2.1', 51820));
    const privA = crypto.generatePrivateKey();
    const privB = crypto.generatePrivateKey();
    const a = new Device({ privateKey: privA, bind: keeping, clock, crypto, onPacket: () => undefined });
    const got: Uint8Array[] = [];
    const b = new Device({ privateKey: privB, bind: net.bind('192.0.2.2', 51820), clock, crypto, onPacket: (p) => got.push(Uint8Array.from(p)) });
    a.up();
    b.up();
    a.addPeer({ publicKey: crypto.publicKey(privB), allowedIPs: ['10.0.0.2/32'], endpoint: { address: '192.0.2.2', port: 51820 } });
    b.addPeer({ publicKey: crypto.publicKey(privA), allowedIPs: ['10.0.0.1/32'], endpoint: { address: '192.0.2.1', port: 51820 } });
    const sent = packets(r, 20);
    for (const p of sent) a.sendPacket(p);
    net.flush();
    expect(got.length).toBe(sent.length);
    const kp = b.sessionState(crypto.publicKey(privA))!.current!;
    const transports = keeping.kept.filter((d) => d[0] === MessageType.Transport && d.length > 32);
    expect(transports.length).toBe(sent.length);
    // Checked after all were sent: a reused buffer would have overwritten the earlier ones.
    transports.forEach((d, i) => expectSealed(d, kp.receive, kp.localIndex, sent[i]));
    expect(new Set(transports.map((d) => d.buffer)).size).toBe(transports.length);
  });
});
