import { describe, expect, it } from 'vitest';
import { makePair, ipPacket, AtoB, BtoA, crypto } from './helpers.js';
import { Device, DeviceWiringError } from '../../src/wg/device.js';
import { MemoryTun } from '../../src/tun/tun.js';
import { ManualClock } from '../../src/clock.js';
import {
  KeepaliveTimeout,
  RejectAfterTime,
  RekeyAfterTime,
  RekeyAttemptTime,
  RekeyTimeout,
  MessageType,
  MaxTimerHandshakes,
} from '../../src/wg/constants.js';

describe('device pair over a memory network', () => {
  for (const psk of [false, true]) {
    it(`handshakes and carries IPv4 and IPv6 both ways (psk=${psk})`, () => {
      const { a, b, net } = makePair({ psk });
      expect(a.dev.sendPacket(AtoB())).toBe(true);
      net.flush();
      expect(b.received.map((r) => Buffer.from(r.packet).equals(Buffer.from(AtoB())))).toEqual([true]);
      expect(b.received[0].peer.publicKeyB64).toBe(a.dev.getPeer(b.pub) ? Buffer.from(a.pub).toString('base64') : '');
      b.dev.sendPacket(BtoA());
      b.dev.sendPacket(ipPacket('fd00::2', 'fd00::1', new Uint8Array(100).fill(7)));
      a.dev.sendPacket(ipPacket('fd00::1', 'fd00::2', new Uint8Array(1300).fill(9)));
      net.flush();
      expect(a.received.length).toBe(2);
      expect(Buffer.from(a.received[1].packet).equals(Buffer.from(ipPacket('fd00::2', 'fd00::1', new Uint8Array(100).fill(7))))).toBe(true);
      expect(b.received.length).toBe(2);
      expect(b.received[1].packet.length).toBe(1340);
      expect(a.dev.droppedTotal()).toBe(0);
      expect(b.dev.droppedTotal()).toBe(0);
      const st = a.dev.peerStatus()[0];
      expect(st.latestHandshake).toBeGreaterThan(0);
      expect(st.txBytes).toBeGreaterThan(1300);
      expect(st.rxBytes).toBeGreaterThan(100);
      expect(st.endpoint).toBe('192.0.2.2:51820');
    });
  }

  it('pads transport messages to a multiple of 16', () => {
    const { a, net } = makePair();
    a.dev.sendPacket(ipPacket('10.0.0.1', '10.0.0.2', new Uint8Array(3)));
    net.flush();
    const transports = net.log.filter((d) => d.data[0] === MessageType.Transport && d.data.length > 32);
    expect(transports.length).toBe(1);
    expect((transports[0].data.length - 32) % 16).toBe(0);
  });

  it('fails a handshake with mismatched preshared keys and delivers nothing', () => {
    const { a, b, net } = makePair({ psk: true });
    b.dev.updatePeer({ publicKey: a.pub, presharedKey: new Uint8Array(32).fill(1) });
    a.dev.sendPacket(AtoB());
    net.flush();
    expect(b.received.length).toBe(0);
    expect(a.dev.stats.dropped.decryptEmpty).toBe(1);
  });

  it('responder learns the endpoint from an authenticated initiation, and roams', () => {
    const { a, b, net } = makePair({ bKnowsA: false });
    a.dev.sendPacket(AtoB());
    net.flush();
    expect(b.dev.peerStatus()[0].endpoint).toBe('192.0.2.1:51820');
    // A moves: a new bind at another address sends with the same keys.
    const moved = net.bind('198.51.100.7', 4000);
    (a.dev as unknown as { bind: unknown }).bind = moved;
    moved.start((d, from) => a.dev.receive(d, from));
    a.dev.sendPacket(AtoB());
    net.flush();
    expect(b.dev.peerStatus()[0].endpoint).toBe('198.51.100.7:4000');
    expect(b.dev.stats.roams).toBe(1);
    b.dev.sendPacket(BtoA());
    net.flush();
    expect(a.received.length).toBe(1);
  });

  it('peers can be added, updated and removed at runtime', () => {
    const { a, b, net } = makePair();
    a.dev.sendPacket(AtoB());
    net.flush();
    expect(b.received.length).toBe(1);
    a.dev.updatePeer({ publicKey: b.pub, allowedIPs: ['10.0.0.0/24'] });
    a.dev.sendPacket(ipPacket('10.0.0.1', '10.0.0.77'));
    a.dev.sendPacket(ipPacket('fd00::1', 'fd00::2'));
    net.flush();
    expect(b.received.length).toBe(2);
    expect(a.dev.stats.dropped.noRoute).toBe(1);
    expect(a.dev.peerStatus()[0].allowedIPs).toEqual(['10.0.0.0/24']);
    expect(a.dev.removePeer(b.pub)).toBe(true);
    expect(a.dev.sendPacket(AtoB())).toBe(false);
    expect(a.dev.stats.dropped.noRoute).toBe(2);
    expect(a.dev.peerStatus()).toEqual([]);
    // B's session to A is now dead: its packets are dropped by A (unknown index), never thrown.
    b.dev.sendPacket(BtoA());
    net.flush();
    expect(a.dev.stats.dropped.unknownIndex).toBe(1);
  });
});

describe('timers (ManualClock, no sleeping)', () => {
  it('rekeys after RekeyAfterTime and traffic continues on the new session', () => {
    const { a, b, net, step } = makePair();
    a.dev.sendPacket(AtoB());
    net.flush();
    const first = a.dev.sessionState(b.pub)!.current!;
    step(RekeyAfterTime + 1);
    a.dev.sendPacket(AtoB()); // sent on the old session, then triggers the rekey
    net.flush();
    const second = a.dev.sessionState(b.pub)!.current!;
    expect(second).not.toBe(first);
    expect(a.dev.stats.handshakeInitiationsSent).toBe(2);
    a.dev.sendPacket(AtoB());
    b.dev.sendPacket(BtoA());
    net.flush();
    expect(b.received.length).toBe(3);
    expect(a.received.length).toBe(1);
  });

  it('zeroes keys RejectAfterTime*3 after the last session was derived', () => {
    const { a, b, net, step } = makePair();
    a.dev.sendPacket(AtoB());
    net.flush();
    const kp = a.dev.sessionState(b.pub)!.current!;
    // B's keepalive at KeepaliveTimeout is the last authenticated packet; then silence.
    for (let t = 0; t < RejectAfterTime * 3 - 1000; t += 1000) step(1000);
    expect(a.dev.sessionState(b.pub)!.current).toBe(kp);
    step(2000);
    expect(a.dev.sessionState(b.pub)!.current).toBeUndefined();
    expect(kp.send.every((x) => x === 0)).toBe(true);
    expect(kp.receive.every((x) => x === 0)).toBe(true);
    // A session older than RejectAfterTime is refused for sending: a new handshake happens.
    a.dev.sendPacket(AtoB());
    net.flush();
    expect(b.received.length).toBe(2);
  });

  it('sends persistent keepalives at the configured interval', () => {
    const { a, b, net, step } = makePair();
    a.dev.updatePeer({ publicKey: b.pub, persistentKeepalive: 25 });
    a.dev.sendPacket(AtoB());
    net.flush();
    const keepalives = () => net.log.filter((d) => d.from.address === '192.0.2.1' && d.data[0] === 4 && d.data.length === 32).length;
    const before = keepalives();
    for (let i = 0; i < 20; i++) step(5_000); // 100 s
    // B's own keepalive (t=10s) resets A's timer, then A sends at 35, 60, 85 s.
    expect(keepalives() - before).toBe(3);
    expect(b.dev.droppedTotal()).toBe(0);
  });

  it('sends a keepalive KeepaliveTimeout after receiving data with nothing to send back', () => {
    const { a, net, step } = makePair();
    a.dev.sendPacket(AtoB());
    net.flush();
    const fromB = () => net.log.filter((d) => d.from.address === '192.0.2.2' && d.data[0] === 4 && d.data.length === 32).length;
    const before = fromB();
    step(KeepaliveTimeout + 100);
    expect(fromB()).toBe(before + 1);
  });

  it('retries the handshake every RekeyTimeout (+jitter) and gives up after RekeyAttemptTime', () => {
    const { a, net, step } = makePair();
    net.filter = () => false; // B is unreachable
    a.dev.sendPacket(AtoB());
    net.flush();
    expect(a.dev.stats.handshakeInitiationsSent).toBe(1);
    step(RekeyTimeout + 400);
    expect(a.dev.stats.handshakeInitiationsSent).toBe(2);
    for (let t = 0; t < RekeyAttemptTime + 40_000; t += 1000) step(1000); // 1 s steps stretch each retry a little
    const sent = a.dev.stats.handshakeInitiationsSent;
    expect(sent).toBe(MaxTimerHandshakes + 2); // as the kernel: "did not complete after 20 attempts"
    expect(a.dev.stats.dropped.handshakeGaveUp).toBe(1);
    for (let t = 0; t < 60_000; t += 1000) step(1000);
    expect(a.dev.stats.handshakeInitiationsSent).toBe(sent);
  });

  it('initiates a new handshake when data sent gets no reply for KeepaliveTimeout + RekeyTimeout', () => {
    const { a, net, step } = makePair();
    a.dev.sendPacket(AtoB());
    net.flush();
    net.filter = (d) => d.from.address !== '192.0.2.2'; // B goes silent
    step(1000);
    a.dev.sendPacket(AtoB());
    net.flush();
    const n = a.dev.stats.handshakeInitiationsSent;
    step(KeepaliveTimeout + RekeyTimeout + 400);
    expect(a.dev.stats.handshakeInitiationsSent).toBe(n + 1);
  });
});

describe('persistent keepalive set at runtime', () => {
  it('brings the session up at once, as `wg set ... persistent-keepalive` does', () => {
    const { a, b, net } = makePair();
    expect(a.dev.stats.handshakeInitiationsSent).toBe(0);
    a.dev.updatePeer({ publicKey: b.pub, persistentKeepalive: 25 });
    net.flush();
    expect(a.dev.stats.handshakesCompleted).toBe(1);
    expect(b.dev.stats.handshakesCompleted).toBe(1); // confirmed by A's keepalive
    expect(a.dev.peerStatus()[0].persistentKeepalive).toBe(25);
  });
});

describe('collaborators given once', () => {
  it('a second packet sink throws DeviceWiringError and the first keeps receiving', () => {
    const { a, b, net } = makePair(); // makePair attaches each device's handler
    expect(() => b.dev.attach(() => undefined)).toThrow(DeviceWiringError);
    a.dev.sendPacket(AtoB());
    net.flush();
    expect(b.received.length).toBe(1);
    const tun = new MemoryTun();
    expect(() => new Device({ privateKey: crypto.generatePrivateKey(), bind: net.bind('192.0.2.9', 1), clock: new ManualClock(), tun, onPacket: () => undefined })).toThrow(DeviceWiringError);
    const withTun = new Device({ privateKey: crypto.generatePrivateKey(), bind: net.bind('192.0.2.10', 1), clock: new ManualClock(), tun });
    expect(() => withTun.attach(() => undefined)).toThrow(/already delivers/);
  });

  it('timers fire from the injected ticker, which up() starts and close() stops', async () => {
    const ticks: (() => void)[] = [];
    let stopped = 0;
    const ticker = { start: (t: () => void) => void ticks.push(t), stop: () => void stopped++ };
    const { a, b, net, clock } = makePair({ device: { ticker } });
    expect(ticks.length).toBe(2); // one per device, from up()
    await b.dev.close(); // B silent: A's handshake goes unanswered
    a.dev.sendPacket(AtoB());
    net.flush();
    const sent = a.dev.stats.handshakeInitiationsSent;
    clock.advance(6_000);
    ticks[0](); // A's ticker fires: the retransmit timer (RekeyTimeout + jitter) has expired
    expect(a.dev.stats.handshakeInitiationsSent).toBe(sent + 1);
    await a.dev.close();
    expect(stopped).toBe(2);
  });
});
