/**
 * Hostile input (issue 3): each case must be dropped silently, counted, never thrown, never answered
 * (except cookie replies under load), and the legitimate tunnel must keep working.
 */
import { seededRandom } from '../support/random.js';
import { describe, expect, it } from 'vitest';
import { makePair, AtoB, BtoA, crypto, ipPacket } from './helpers.js';
import {
  MaxContentSize,
  MaxMessageSize,
  MessageCookieReplySize,
  MessageInitiationSize,
  MessageResponseSize,
  MessageTransportSize,
  MessageType,
  UnderLoadHandshakesPerSecond,
} from '../../src/wg/constants.js';
import { CookieRepliesBurstable, CookieRepliesPerSecond, HandshakesBurstable } from '../../src/wg/ratelimiter.js';
import { Device } from '../../src/wg/device.js';
import { CookieGenerator } from '../../src/wg/cookie.js';
import { marshalInitiation, marshalResponse, unmarshalCookieReply } from '../../src/wg/messages.js';
import { readFileSync } from 'node:fs';

const lowOrder = (JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8')) as { lowOrderPoints: string[] })
  .lowOrderPoints.map((s) => new Uint8Array(Buffer.from(s, 'hex')));
const attacker = { address: '203.0.113.66', port: 6666 };

type Pair = ReturnType<typeof makePair>;

/** Establish the tunnel and return a checker that proves it still carries traffic both ways. */
function established(opts: Parameters<typeof makePair>[0] = {}) {
  const pair = makePair(opts);
  pair.a.dev.sendPacket(AtoB());
  pair.net.flush();
  expect(pair.b.received.length).toBe(1);
  const stillWorks = () => {
    const nb = pair.b.received.length;
    const na = pair.a.received.length;
    pair.a.dev.sendPacket(AtoB());
    pair.net.flush();
    pair.b.dev.sendPacket(BtoA());
    pair.net.flush();
    expect(pair.b.received.length).toBe(nb + 1);
    expect(pair.a.received.length).toBe(na + 1);
  };
  return { ...pair, stillWorks };
}

/** Advance time in 1 s steps, so timers fire when they would in real time. */
function advance(p: Pair, ms: number): void {
  for (let t = 0; t < ms; t += 1000) p.step(1000);
}

function inject(p: Pair, data: Uint8Array, from = attacker, to = p.b.addr): void {
  p.net.send(data, from, to);
  p.net.flush();
}

/** Datagrams B sent to `to` so far. */
const sentTo = (p: Pair, to: { address: string }, type?: number) =>
  p.net.log.filter((d) => d.from.address === p.b.addr.address && d.to.address === to.address && (type === undefined || d.data[0] === type));

describe('hostile input', () => {
  it('every length 0..max+1 of every message type, and unknown types', () => {
    const rnd = seededRandom();
    const p = established();
    const sizes = { 1: MessageInitiationSize, 2: MessageResponseSize, 3: MessageCookieReplySize, 4: MessageTransportSize + 64 };
    let count = 0;
    for (const type of [0, 1, 2, 3, 4, 5, 127, 255]) {
      const max = (sizes as Record<number, number>)[type] ?? MessageInitiationSize;
      for (let len = 0; len <= max + 1; len++) {
        const d = rnd.bytes(len);
        if (len > 0) d[0] = type;
        if (len > 3) d.fill(0, 1, 4);
        expect(() => inject(p, d)).not.toThrow();
        count++;
      }
    }
    expect(p.b.dev.droppedTotal()).toBe(count);
    expect(p.b.dev.stats.dropped.unknownType).toBeGreaterThan(0);
    expect(p.b.dev.stats.dropped.invalidLength).toBeGreaterThan(0);
    expect(p.b.dev.stats.dropped.badMac1).toBeGreaterThan(0);
    expect(p.b.dev.stats.dropped.unknownIndex).toBeGreaterThan(0);
    expect(sentTo(p, attacker).length).toBe(0);
    p.stillWorks();
  });

  it('garbage under a live receiver index fails authentication', () => {
    const rnd = seededRandom();
    const p = established();
    const real = p.net.log.find((d) => d.to.address === p.b.addr.address && d.data[0] === MessageType.Transport)!;
    for (let i = 0; i < 20; i++) {
      const d = Uint8Array.from(real.data);
      d.set(rnd.bytes(d.length - 16), 16);
      inject(p, d);
    }
    expect(p.b.dev.stats.dropped.decrypt).toBe(20);
    expect(p.b.dev.peerStatus()[0].endpoint).toBe('192.0.2.1:51820'); // no roaming to the attacker
    p.stillWorks();
  });

  it('non-zero reserved bytes', () => {
    const p = established();
    const init = p.net.log.find((d) => d.data[0] === MessageType.Initiation)!;
    const transport = p.net.log.find((d) => d.to.address === p.b.addr.address && d.data[0] === MessageType.Transport)!;
    for (const src of [init, transport]) {
      for (const i of [1, 2, 3]) {
        const d = Uint8Array.from(src.data);
        d[i] = 1;
        inject(p, d, src.from);
      }
    }
    expect(p.b.dev.stats.dropped.invalidHeader).toBe(6);
    p.stillWorks();
  });

  it('wrong MAC1', () => {
    const p = established();
    const init = p.net.log.find((d) => d.data[0] === MessageType.Initiation)!;
    const d = Uint8Array.from(init.data);
    d[MessageInitiationSize - 20] ^= 0x80;
    inject(p, d, init.from);
    expect(p.b.dev.stats.dropped.badMac1).toBe(1);
    expect(p.b.dev.stats.handshakeResponsesSent).toBe(1);
    p.stillWorks();
  });

  it('replayed transport packets (window behaviour)', () => {
    const p = established();
    const start = p.net.log.length;
    p.net.filter = (d) => d.to.address !== p.b.addr.address || d.data[0] !== MessageType.Transport; // hold A's packets
    for (let i = 0; i < 5; i++) p.a.dev.sendPacket(AtoB());
    p.net.flush();
    p.net.filter = () => true;
    const held = p.net.log.slice(start).filter((d) => d.to.address === p.b.addr.address);
    expect(held.length).toBe(5);
    // Out of order inside the window: all accepted once.
    for (const d of [...held].reverse()) inject(p, d.data, d.from);
    expect(p.b.received.length).toBe(6);
    // Each again: replay.
    for (const d of held) inject(p, d.data, d.from);
    expect(p.b.dev.stats.dropped.replay).toBe(5);
    expect(p.b.received.length).toBe(6);
    p.stillWorks();
  });

  it('replayed initiation (stale TAI64N) gets no response', () => {
    const p = established();
    const init = p.net.log.find((d) => d.data[0] === MessageType.Initiation)!;
    const responses = sentTo(p, p.a.addr, MessageType.Response).length;
    p.step(100); // past the per-peer initiation rate limit
    inject(p, init.data, init.from);
    inject(p, init.data, attacker);
    expect(p.b.dev.stats.dropped.staleTimestamp).toBe(2);
    expect(sentTo(p, p.a.addr, MessageType.Response).length).toBe(responses);
    expect(sentTo(p, attacker).length).toBe(0);
    p.stillWorks();
  });

  it('initiation flood: under load, cookie replies instead of responses, per-source rate limit, legit peer still connects', () => {
    const rnd = seededRandom();
    const p = established({ device: { underLoadHandshakesPerSecond: 8 } });
    // The attacker knows B's public key, so it can make MAC1 (and, with a cookie, MAC2).
    const gen = new CookieGenerator(crypto, p.b.pub);
    const forged = () => {
      const m = marshalInitiation({
        sender: 42,
        ephemeral: crypto.publicKey(crypto.generatePrivateKey()),
        static: rnd.bytes(48),
        timestamp: rnd.bytes(28),
        mac1: new Uint8Array(16),
        mac2: new Uint8Array(16),
      });
      gen.addMacs(m, p.clock.monotonic());
      return m;
    };
    for (let i = 0; i < 30; i++) inject(p, forged());
    const cookieReplies = sentTo(p, attacker, MessageType.CookieReply);
    // Under load one endpoint gets one cookie reply per quiet period (CookieReplyQuietMs); the rest
    // of its flood is refused by the per-source limiter before any hash, or after MAC1 without a
    // reply (issue 13, item 9).
    expect(cookieReplies.length).toBe(1);
    expect(sentTo(p, attacker, MessageType.Response).length).toBe(0);
    const d = p.b.dev.stats.dropped;
    expect(d.cookieRequired).toBe(1);
    expect(d.rateLimited).toBeGreaterThanOrEqual(15);
    expect(d.decryptStatic + d.cookieRequired + d.cookieBudget + d.rateLimited).toBe(30);

    // With a valid cookie the attacker passes MAC2 but meets the per-source token bucket (burst 5).
    p.step(300); // the source's bucket refills a little; the device is still under load
    const attacker2 = { ...attacker, port: attacker.port + 1 }; // another port: not in a quiet period
    inject(p, forged(), attacker2);
    const reply = sentTo(p, attacker2, MessageType.CookieReply).filter((r) => r.to.port === attacker2.port).at(-1)!;
    expect(gen.consumeReply(unmarshalCookieReply(reply.data)!, p.clock.monotonic())).toBe(true);
    for (let i = 0; i < 30; i++) inject(p, forged());
    expect(p.b.dev.stats.dropped.rateLimited).toBeGreaterThanOrEqual(20);

    // The legitimate peer re-handshakes while the flood goes on: its first initiation gets a cookie, the
    // retry carries MAC2 and completes.
    const handshakes = p.b.dev.stats.handshakeResponsesSent;
    advance(p, 130_000); // old session is past RekeyAfterTime
    const floodStep = () => {
      for (let i = 0; i < 10; i++) inject(p, forged());
      p.step(1000);
    };
    for (let i = 0; i < 10; i++) inject(p, forged());
    const completed = p.a.dev.stats.handshakesCompleted;
    p.a.dev.sendPacket(AtoB());
    p.net.flush();
    // No time has passed: the cookie reply made A re-send at once with MAC2 (not after RekeyTimeout).
    expect(p.a.dev.stats.cookieRepliesReceived).toBe(1);
    expect(p.a.dev.stats.handshakesCompleted).toBe(completed + 1);
    for (let i = 0; i < 8; i++) floodStep();
    expect(p.a.dev.stats.cookieRepliesReceived).toBeGreaterThanOrEqual(1);
    expect(p.b.dev.stats.handshakeResponsesSent).toBeGreaterThan(handshakes);
    p.stillWorks();
  });

  it('low-order X25519 public keys', () => {
    const rnd = seededRandom();
    const p = established();
    // As an initiation's ephemeral key (valid MAC1, so it reaches the DH).
    const gen = new CookieGenerator(crypto, p.b.pub);
    for (const point of lowOrder) {
      const m = marshalInitiation({
        sender: 7, ephemeral: point, static: rnd.bytes(48), timestamp: rnd.bytes(28),
        mac1: new Uint8Array(16), mac2: new Uint8Array(16),
      });
      gen.addMacs(m, 0);
      inject(p, m);
    }
    expect(p.b.dev.stats.dropped.lowOrderPoint).toBe(lowOrder.length);
    // As a response's ephemeral key, addressed to A's in-flight handshake.
    advance(p, 130_000);
    p.net.filter = (d) => d.data[0] !== MessageType.Initiation; // A's initiation never arrives
    p.a.dev.sendPacket(AtoB());
    p.net.flush();
    p.net.filter = () => true;
    const init = p.net.log.filter((d) => d.data[0] === MessageType.Initiation).at(-1)!;
    const sender = new DataView(init.data.buffer, init.data.byteOffset).getUint32(4, true);
    const genA = new CookieGenerator(crypto, p.a.pub);
    for (const point of lowOrder) {
      const r = marshalResponse({ sender: 9, receiver: sender, ephemeral: point, empty: rnd.bytes(16), mac1: new Uint8Array(16), mac2: new Uint8Array(16) });
      genA.addMacs(r, 0);
      inject(p, r, p.b.addr, p.a.addr);
    }
    expect(p.a.dev.stats.dropped.lowOrderPoint).toBe(lowOrder.length);
    // A peer configured with a low-order static key never handshakes and never throws.
    expect(() => p.a.dev.addPeer({ publicKey: lowOrder[2], allowedIPs: ['10.9.9.9/32'], endpoint: attacker })).not.toThrow();
    expect(() => p.a.dev.sendPacket(ipPacket('10.0.0.1', '10.9.9.9'))).not.toThrow();
    p.net.flush();
    expect(sentTo(p, attacker).length).toBe(0);
    p.step(6000);
    p.stillWorks();
  });

  it('decrypted inner packet whose source is outside the peer\'s allowed IPs', () => {
    const p = established();
    for (const spoof of [ipPacket('10.0.0.99', '10.0.0.1'), ipPacket('fd00::99', 'fd00::1'), ipPacket('10.0.0.1', '10.0.0.1')]) {
      p.b.dev.sendPacket(spoof);
      p.net.flush();
    }
    expect(p.a.dev.stats.dropped.disallowedSource).toBe(3);
    expect(p.a.received.length).toBe(0);
    // Not an IP packet at all, authenticated: dropped as badInnerPacket.
    p.stillWorks();
  });
});

describe('hostile input against a throwing I/O edge', () => {
  it('a Bind that throws on send (spoofed port 0) does not take the device down', () => {
    // Threshold 0: always under load, so every handshake with a valid MAC1 but no MAC2 gets a cookie reply.
    const p = makePair({ device: { underLoadHandshakesPerSecond: 0 } });
    const bind = (p.b.dev as unknown as { bind: { send: (d: Uint8Array, to: { port: number }) => void } }).bind;
    const orig = bind.send.bind(bind);
    bind.send = (d, to) => {
      if (to.port === 0) throw new RangeError('ERR_SOCKET_BAD_PORT');
      orig(d, to);
    };
    p.net.filter = () => false;
    p.a.dev.sendPacket(AtoB());
    p.net.flush();
    p.net.filter = () => true;
    const init = p.net.log.find((d) => d.data[0] === MessageType.Initiation)!;
    expect(() => inject(p, init.data, { address: '203.0.113.1', port: 0 })).not.toThrow();
    expect(p.b.dev.stats.dropped.internalError).toBe(1);
    // The legitimate peer still gets through: cookie reply, then a retry with MAC2.
    advance(p, 20_000);
    expect(p.a.dev.stats.cookieRepliesReceived).toBeGreaterThanOrEqual(1);
    expect(p.b.received.length).toBe(1);
  });
});

describe('MaxMessageSize (wireguard-go MaxMessageSize / MaxContentSize)', () => {
  it('drops a transport datagram longer than MaxMessageSize and an inner packet longer than MaxContentSize', () => {
    const pair = established();
    const { stillWorks } = pair;
    // Built with a valid header so only its length is wrong (a virtual link could carry one this long).
    const big = new Uint8Array(MaxMessageSize + 1);
    big[0] = MessageType.Transport;
    pair.b.dev.receive(big, attacker);
    expect(pair.b.dev.stats.dropped.invalidLength).toBe(1);
    const before = pair.a.dev.stats.txPackets;
    expect(pair.a.dev.sendPacket(ipPacket('10.0.0.1', '10.0.0.2', new Uint8Array(MaxContentSize)))).toBe(false);
    expect(pair.a.dev.stats.dropped.badInnerPacket).toBe(1);
    expect(pair.a.dev.stats.txPackets).toBe(before);
    stillWorks();
  });
});

describe('many-source handshake flood (issue 13, item 9): a global budget', () => {
  /** `n` distinct initiations with a valid MAC1 for `pub` (random otherwise), as anyone with the directory can make. */
  const forgedSet = (rnd: ReturnType<typeof seededRandom>, pub: Uint8Array, n: number) => {
    const gen = new CookieGenerator(crypto, pub);
    return Array.from({ length: n }, () => {
      const m = marshalInitiation({
        sender: rnd.int(2 ** 31),
        ephemeral: crypto.publicKey(crypto.generatePrivateKey()),
        static: rnd.bytes(48),
        timestamp: rnd.bytes(28),
        mac1: new Uint8Array(16),
        mac2: new Uint8Array(16),
      });
      gen.addMacs(m, 0);
      return m;
    });
  };

  it('1024 sources: cookie replies once per source and quiet period, no Noise work for any, the session carries, a new peer completes via its cookie', () => {
    const rnd = seededRandom();
    const p = established();
    const msgs = forgedSet(rnd, p.b.pub, 64);
    const sources = Array.from({ length: 1024 }, (_, i) => ({ address: `198.18.${i >> 8}.${i & 255}`, port: 40_000 + (i % 7) }));
    const noiseBefore = p.b.dev.stats.dropped.decryptStatic;
    // A new peer C, known to B, at an address the flood does not use.
    const c = { priv: crypto.generatePrivateKey(), addr: { address: '192.0.2.3', port: 51820 } };
    const cDev = new Device({ privateKey: c.priv, bind: p.net.bind(c.addr.address, c.addr.port), clock: p.clock, crypto });
    cDev.attach(() => {});
    cDev.up();
    cDev.addPeer({ publicKey: p.b.pub, allowedIPs: ['10.0.0.2/32'], endpoint: p.b.addr });
    p.b.dev.addPeer({ publicKey: crypto.publicKey(c.priv), allowedIPs: ['10.0.0.3/32'] });

    // 3 s of flood: every source sends 10 initiations a second (10 240/s), in 10 ms rounds.
    let sent = 0;
    for (let round = 0; round < 300; round++) {
      for (let k = 0; k < 34; k++) {
        const s = sources[(round * 34 + k) % sources.length];
        p.net.send(msgs[sent++ % msgs.length], s, p.b.addr);
      }
      p.net.flush();
      if (round === 250) {
        // The legitimate new peer starts in the middle of the flood: its first initiation gets a cookie
        // reply, its immediate retry carries MAC2 and completes, with no time passing.
        cDev.sendPacket(ipPacket('10.0.0.3', '10.0.0.2'));
        p.net.flush();
        expect(cDev.stats.cookieRepliesReceived).toBe(1);
        expect(cDev.stats.handshakesCompleted).toBe(1);
      }
      p.clock.advance(10);
    }
    const d = p.b.dev.stats.dropped;
    // Every flood message reached at most MAC1 (+ a cookie reply): none reached the Noise work once
    // under load (only those before the load was seen, at most UnderLoadHandshakesPerSecond).
    expect(d.decryptStatic - noiseBefore).toBeLessThanOrEqual(UnderLoadHandshakesPerSecond);
    // One cookie reply per endpoint and quiet period (3 s < CookieReplyQuietMs), within the global budget.
    const floodReplies = p.net.log.filter((x) => x.from.address === p.b.addr.address && x.to.address.startsWith('198.18.')).length;
    expect(floodReplies).toBeLessThanOrEqual(sources.length);
    expect(floodReplies).toBeLessThanOrEqual(CookieRepliesBurstable + 3 * CookieRepliesPerSecond);
    expect(d.cookieBudget + d.rateLimited).toBeGreaterThan(sent / 2);
    expect(p.b.received.some((r) => r.packet[15] === 3)).toBe(true); // C's packet arrived
    p.stillWorks();
  });

  it('ever-new spoofed endpoints: cookie replies and Noise work stay within the global budgets', () => {
    const rnd = seededRandom();
    const p = established();
    const msgs = forgedSet(rnd, p.b.pub, 64);
    let replies = 0;
    const seconds = 2;
    for (let round = 0; round < seconds * 100; round++) {
      for (let k = 0; k < 50; k++) {
        const s = { address: `${1 + rnd.int(223)}.${rnd.int(256)}.${rnd.int(256)}.${rnd.int(256)}`, port: 1 + rnd.int(65_535) };
        p.net.send(msgs[rnd.int(msgs.length)], s, p.b.addr);
      }
      p.net.flush();
      p.clock.advance(10);
    }
    replies = p.b.dev.stats.cookieRepliesSent;
    expect(replies).toBeLessThanOrEqual(CookieRepliesBurstable + seconds * CookieRepliesPerSecond);
    expect(replies).toBeGreaterThan(seconds * CookieRepliesPerSecond * 0.9); // the budget is used, not starved
    const early = p.b.dev.stats.dropped.decryptStatic; // flood messages before the load was seen
    expect(early).toBeLessThanOrEqual(UnderLoadHandshakesPerSecond + 1);
    expect(p.b.dev.stats.dropped.cookieBudget).toBe(seconds * 100 * 50 - early - replies - p.b.dev.stats.dropped.rateLimited);
    // With a cookie, a real source reaches the Noise work, but only within the handshake budget.
    p.clock.advance(200); // still under load; the reply bucket refills to its burst
    const gen = new CookieGenerator(crypto, p.b.pub);
    const realSources = Array.from({ length: 100 }, (_, i) => ({ address: `198.19.${i >> 8}.${i & 255}`, port: 5000 }));
    for (const s of realSources) {
      const m = forgedSet(rnd, p.b.pub, 1)[0];
      gen.addMacs(m, p.clock.monotonic());
      p.net.send(m, s, p.b.addr);
      p.net.flush();
      const r = p.net.log.at(-1)!;
      expect(r.data[0]).toBe(MessageType.CookieReply);
      expect(gen.consumeReply(unmarshalCookieReply(r.data)!, p.clock.monotonic())).toBe(true);
      gen.addMacs(m, p.clock.monotonic()); // the same initiation, now with MAC2
      p.net.send(m, s, p.b.addr);
      p.net.flush();
    }
    const d = p.b.dev.stats.dropped;
    expect(d.handshakeBudget).toBeGreaterThan(0);
    expect(d.decryptStatic - early + d.handshakeBudget).toBe(realSources.length);
    expect(d.decryptStatic - early).toBeLessThanOrEqual(HandshakesBurstable);
    p.step(1000);
    p.stillWorks();
  });
});
