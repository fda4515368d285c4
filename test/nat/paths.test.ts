import { seededRandom } from '../support/random.js';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { endpointKey, type Endpoint, type UdpEndpoint } from '../../src/conn/bind.js';
import { MemoryNetwork } from '../../src/conn/memory.js';
import { PathBind, PathWiringError, type LinkDataHandler, type VirtualLink } from '../../src/nat/path-bind.js';
import { MessageType } from '../../src/wg/constants.js';
import { PeerPaths } from '../../src/nat/paths.js';
import { IceLink } from '../../src/nat/ice.js';
import { RelayClient } from '../../src/nat/relay-client.js';
import { decodeStun, encodeStun, StunClass } from '../../src/nat/stun.js';
import { Device } from '../../src/wg/device.js';
import { crypto, ipPacket } from '../wg/helpers.js';

/** An in-memory relay: links by peer id, delivery queued until flush(). */
class MemoryRelay {
  private readonly links = new Map<string, LinkDataHandler>();
  private q: { to: string; from: string; data: Uint8Array }[] = [];
  up = true;
  link(selfId: string): VirtualLink {
    const l: VirtualLink = {
      attach: (onData) => void this.links.set(selfId, onData),
      send: (peerId, data) => {
        if (this.up) this.q.push({ to: peerId, from: selfId, data: Uint8Array.from(data) });
      },
    };
    return l;
  }
  flush(): number {
    const q = this.q;
    this.q = [];
    for (const m of q) this.links.get(m.to)?.(m.from, m.data);
    return q.length;
  }
}

function setup(opts: { relay?: boolean } = {}) {
  const clock = new ManualClock();
  const net = new MemoryNetwork();
  const relay = new MemoryRelay();
  const mk = (id: string, address: string, overlay: string) => {
    const priv = crypto.generatePrivateKey();
    const bind = new PathBind(net.bind(address, 51820));
    if (opts.relay) bind.addLink('relay', relay.link(id));
    const received: Uint8Array[] = [];
    const dev = new Device({ privateKey: priv, bind, clock, crypto, onPacket: (p) => received.push(Uint8Array.from(p)) });
    return { id, bind, dev, pub: crypto.publicKey(priv), received, overlay, addr: { address, port: 51820 } as UdpEndpoint };
  };
  const a = mk('alice', '192.0.2.1', '10.0.0.1');
  const b = mk('bob', '198.51.100.2', '10.0.0.2');
  a.dev.addPeer({ publicKey: b.pub, allowedIPs: ['10.0.0.2/32'] });
  b.dev.addPeer({ publicKey: a.pub, allowedIPs: ['10.0.0.1/32'] });
  const paths = (self: typeof a, other: typeof b) => {
    const p = new PeerPaths({
      peerId: other.id,
      now: clock.monotonic(),
      send: (d, to) => self.bind.send(d, to),
      getEndpoint: () => self.dev.getPeer(other.pub)?.endpoint,
      setEndpoint: (ep) => self.dev.updatePeer({ publicKey: other.pub, endpoint: ep }),
    });
    self.bind.attachStun((data, from) => {
      const m = decodeStun(data);
      if (typeof m === 'string') return;
      if (m.class === StunClass.Request) p.handleRequest(m, from, clock.monotonic());
      else p.handleResponse(m, from, clock.monotonic());
    });
    self.dev.up();
    return p;
  };
  const pa = paths(a, b);
  const pb = paths(b, a);
  // Signalling, done by hand here: each learns the other's credentials and host candidate.
  pa.setRemote(pb.local, [{ type: 'host', ...b.addr }], !!opts.relay, clock.monotonic());
  pb.setRemote(pa.local, [{ type: 'host', ...a.addr }], !!opts.relay, clock.monotonic());
  const step = (ms: number) => {
    clock.advance(ms);
    const now = clock.monotonic();
    pa.tick(now);
    pb.tick(now);
    a.dev.tick();
    b.dev.tick();
    for (let i = 0; i < 10 && net.flush() + relay.flush() > 0; i++);
  };
  const run = (ms: number, each = 50) => {
    for (let t = 0; t < ms; t += each) step(each);
  };
  return { clock, net, relay, a, b, pa, pb, step, run };
}

describe('PeerPaths', () => {
  it('selects the direct path when both candidates answer, and WireGuard traffic flows over it', () => {
    const s = setup();
    s.run(300);
    expect(s.pa.status(s.clock.monotonic()).kind).toBe('direct');
    expect(s.a.dev.getPeer(s.b.pub)?.endpoint).toEqual(s.b.addr);
    s.a.dev.sendPacket(ipPacket('10.0.0.1', '10.0.0.2'));
    s.run(200);
    expect(s.b.received.length).toBe(1);
    const st = s.pa.status(s.clock.monotonic());
    expect(st.rttMs).not.toBeNull();
    expect(st.establishMs).toBeGreaterThanOrEqual(0);
  });

  it('falls back to the relay when UDP is blocked, and moves to direct when it opens', () => {
    const s = setup({ relay: true });
    let blocked = true;
    s.net.filter = () => !blocked;
    s.run(500);
    expect(s.pa.status(s.clock.monotonic()).kind).toBe('relay');
    expect(s.a.dev.getPeer(s.b.pub)?.endpoint).toEqual({ kind: 'virtual', scheme: 'relay', peerId: 'bob' });
    s.a.dev.sendPacket(ipPacket('10.0.0.1', '10.0.0.2'));
    s.run(200);
    expect(s.b.received.length).toBe(1);
    expect(s.b.bind.stats.virtualIn).toBeGreaterThan(0);
    blocked = false;
    s.run(2_000);
    expect(s.pa.status(s.clock.monotonic()).kind).toBe('direct');
    expect(s.pb.status(s.clock.monotonic()).kind).toBe('direct');
    s.a.dev.sendPacket(ipPacket('10.0.0.1', '10.0.0.2'));
    s.b.dev.sendPacket(ipPacket('10.0.0.2', '10.0.0.1'));
    s.run(200);
    expect(s.b.received.length).toBe(2);
    expect(s.a.received.length).toBe(1);
    expect(s.pa.switches).toBe(2);
  });

  it('returns to the relay when the direct path dies, and reports the loss', () => {
    const s = setup({ relay: true });
    s.run(500);
    expect(s.pa.status(s.clock.monotonic()).kind).toBe('direct');
    s.net.filter = () => false;
    s.run(3_000);
    expect(s.pa.status(s.clock.monotonic()).kind).toBe('relay');
    s.a.dev.sendPacket(ipPacket('10.0.0.1', '10.0.0.2'));
    s.run(200);
    expect(s.b.received.length).toBe(1);
  });

  it('follows a NAT rebinding: checks from a new source become a peer-reflexive path', () => {
    const s = setup();
    s.run(300);
    // Alice's NAT remaps her: her packets now arrive from 192.0.2.99:40000, and replies there reach her.
    const moved = { address: '192.0.2.99', port: 40000 };
    const aliceBind = s.net.bind(moved.address, moved.port);
    aliceBind.start((d, from) => s.a.bind.dispatch(d, from));
    (s.a.bind.udp as { send: (d: Uint8Array, to: Endpoint) => void }).send = (d, to) => aliceBind.send(d, to);
    s.run(3_000);
    expect(s.pb.status(s.clock.monotonic()).endpoint).toBe('192.0.2.99:40000');
    s.b.dev.sendPacket(ipPacket('10.0.0.2', '10.0.0.1'));
    s.run(200);
    expect(s.a.received.length).toBe(1);
  });

  it('ignores checks with the wrong password or username', () => {
    const s = setup();
    s.net.flush();
    const answered = s.pb.stats.requestsAnswered;
    const t = new Uint8Array(12).fill(7);
    const inject = (username: string, key: string) =>
      s.net.send(encodeStun({ class: StunClass.Request, transactionId: t, username, integrityKey: key }), { address: '203.0.113.9', port: 1 }, s.b.addr);
    inject(`${s.pb.local.ufrag}:x`, 'not-the-password');
    inject(`nobody:x`, s.pb.local.pwd);
    s.net.flush();
    expect(s.pb.stats.badIntegrity).toBe(1);
    expect(s.pb.stats.badUsername).toBe(1);
    expect(s.pb.stats.requestsAnswered).toBe(answered);
  });
});

describe('PathBind demultiplexing', () => {
  it('sends WireGuard to the device, STUN to onStun, and drops garbage without touching the device', () => {
    const s = setup();
    s.run(300);
    s.a.dev.sendPacket(ipPacket('10.0.0.1', '10.0.0.2'));
    s.run(100);
    const mux = s.b.bind;
    const before = { ...mux.stats };
    const droppedBefore = s.b.dev.droppedTotal();
    const junk = [new Uint8Array([]), new Uint8Array([1]), new Uint8Array([5, 0, 0, 0, 9]), new Uint8Array([1, 0, 0, 1, 0, 0]), new TextEncoder().encode('GET / HTTP/1.1\r\n\r\n')];
    const rnd = seededRandom();
    for (let i = 0; i < 200; i++) junk.push(rnd.bytes(1 + (i % 64)).map((x, j) => (j === 0 ? x | 0x80 : x)));
    for (const j of junk) s.net.send(j, { address: '203.0.113.9', port: 1 }, s.b.addr);
    s.net.flush();
    expect(mux.stats.garbage - before.garbage).toBe(junk.length);
    expect(s.b.dev.droppedTotal()).toBe(droppedBefore);
    // The tunnel still works.
    s.a.dev.sendPacket(ipPacket('10.0.0.1', '10.0.0.2'));
    s.run(100);
    expect(s.b.received.length).toBe(2);
    expect(mux.stats.wireguard).toBeGreaterThan(0);
    expect(mux.stats.stun).toBeGreaterThan(0);
  });
});

describe('PathBind wiring', () => {
  it('holds WireGuard from UDP and from links in one early queue until the device starts, and refuses a second handler', () => {
    const net = new MemoryNetwork();
    const udp = net.bind('192.0.2.1', 51820);
    const bind = new PathBind(udp);
    const relay = new MemoryRelay();
    const aliceLink = relay.link('alice');
    bind.addLink('relay', aliceLink);
    expect(() => bind.addLink('relay', aliceLink)).toThrow(PathWiringError);
    const stun: Endpoint[] = [];
    bind.attachStun((_d, from) => stun.push(from));
    expect(() => bind.attachStun(() => undefined)).toThrow(PathWiringError);
    const wg = (n: number) => new Uint8Array([MessageType.Transport, 0, 0, 0, n]);
    net.send(wg(1), { address: '198.51.100.2', port: 1 }, { address: '192.0.2.1', port: 51820 });
    net.flush();
    relay.link('bob').send('alice', wg(2));
    relay.flush();
    for (let i = 0; i < 20; i++) bind.dispatch(wg(3), { address: '198.51.100.2', port: 1 });
    const got: [number, string][] = [];
    bind.start((d, from) => got.push([d[4], endpointKey(from)]));
    expect(got.slice(0, 2)).toEqual([
      [1, '198.51.100.2:1'],
      [2, 'relay:bob'],
    ]);
    expect(got.length).toBe(16);
    expect(bind.stats.earlyOverflow).toBe(6);
    expect(() => bind.start(() => undefined)).toThrow(PathWiringError);
    bind.dispatch(encodeStun({ class: StunClass.Request, transactionId: new Uint8Array(12) }), { address: '203.0.113.9', port: 7 });
    expect(stun).toEqual([{ address: '203.0.113.9', port: 7 }]);
  });

  it('the relay client and the ICE link take their datagram handler once: a second attach throws ENAT_WIRING', () => {
    const links: VirtualLink[] = [
      new RelayClient({ url: 'tcp://127.0.0.1:9', selfId: 'alice' }),
      new IceLink({ selfId: 'alice', iceServers: [], signal: () => undefined }),
    ];
    for (const link of links) {
      link.attach(() => undefined);
      expect(() => link.attach(() => undefined)).toThrow(expect.objectContaining({ code: 'ENAT_WIRING' }));
      // Through the bind too: the link already delivers elsewhere, so the bind refuses it.
      expect(() => new PathBind(new MemoryNetwork().bind('192.0.2.1', 51820)).addLink('relay', link)).toThrow(PathWiringError);
    }
  });
});
