import { afterEach, describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder, FrameType } from '../../src/nat/relay-frame.js';
import { RelayClient } from '../../src/nat/relay-client.js';
import { RelayServer, type RelayEvent } from '../../src/nat/relay-server.js';
import { decodeRelaySecret, newRelaySecret, relayCredential, verifyRelayCredential } from '../../src/nat/relay-credential.js';
import { waitFor } from '../../e2e/support/env.js';

const until = (cond: () => boolean) => waitFor(cond, 60_000, 'the relay');

describe('relay framing', () => {
  it('decodes frames fed one byte at a time', () => {
    const a = encodeFrame(FrameType.Data, 'bob', new Uint8Array([1, 0, 0, 0, 9]));
    const b = encodeFrame(FrameType.Hello, 'alice', new Uint8Array(0));
    const d = new FrameDecoder();
    const out = [];
    for (const byte of [...a, ...b]) out.push(...d.push(new Uint8Array([byte])));
    expect(out).toEqual([
      { type: FrameType.Data, id: 'bob', payload: new Uint8Array([1, 0, 0, 0, 9]) },
      { type: FrameType.Hello, id: 'alice', payload: new Uint8Array(0) },
    ]);
  });

  it('flags an oversized length as a broken stream and skips unknown types', () => {
    const d = new FrameDecoder();
    const unknown = encodeFrame(FrameType.Data, 'x', new Uint8Array(1));
    unknown[4] = 99;
    expect(d.push(unknown)).toEqual([]);
    expect(d.invalid).toBe(1);
    expect(d.push(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1]))).toEqual([]);
    expect(d.error).toMatch(/bad frame length/);
  });
});

describe('relay server and client (loopback)', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });

  const secret = decodeRelaySecret(newRelaySecret())!;
  const cred = (id: string) => relayCredential(secret, id);

  it('forwards datagrams between ids, drops unknown destinations, enforces the credential, reconnects', async () => {
    const srv = await RelayServer.listen({ secret });
    closers.push(() => srv.close());
    const a = new RelayClient({ url: srv.url, selfId: 'alice', token: cred('alice') });
    const b = new RelayClient({ url: srv.url, selfId: 'bob', token: cred('bob') });
    const bad = new RelayClient({ url: srv.url, selfId: 'mallory', token: 'nope', minBackoffMs: 5000 });
    closers.push(() => a.close(), () => b.close(), () => bad.close());
    const got: [string, number[]][] = [];
    b.attach((from, p) => got.push([from, [...p]]));
    a.start();
    b.start();
    bad.start();
    await Promise.all([a.ready(), b.ready()]);
    // Bob's datagram to himself comes back only after the server has taken his Hello; alice's own Hello precedes
    // her data on her connection, so from here on her sends to bob are routable.
    b.send('bob', new Uint8Array([0]));
    await until(() => got.length === 1);
    got.length = 0;
    a.send('bob', new Uint8Array([4, 0, 0, 0, 1, 2]));
    a.send('nobody', new Uint8Array([1]));
    await until(() => got.length === 1);
    expect(got[0]).toEqual(['alice', [4, 0, 0, 0, 1, 2]]);
    await until(() => srv.stats.unknownDestination === 1 && srv.stats.rejected >= 1);
    bad.send('bob', new Uint8Array([1]));
    // Kill alice's connection: she reconnects by herself and traffic resumes.
    a.kick();
    await until(() => a.stats.connects === 2 && a.isConnected);
    a.send('bob', new Uint8Array([9])); // after her new Hello on the same connection
    await until(() => got.length === 2);
    expect(got[1]).toEqual(['alice', [9]]);
  });
});

describe('relay credentials (peer id binding, #12)', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });

  it('a credential is bound to its id and its secret', () => {
    const s1 = decodeRelaySecret(newRelaySecret())!;
    const s2 = decodeRelaySecret(newRelaySecret())!;
    const enc = (t: string) => new TextEncoder().encode(t);
    expect(verifyRelayCredential(s1, 'alice', enc(relayCredential(s1, 'alice')))).toBe(true);
    expect(verifyRelayCredential(s1, 'bob', enc(relayCredential(s1, 'alice')))).toBe(false);
    expect(verifyRelayCredential(s2, 'alice', enc(relayCredential(s1, 'alice')))).toBe(false);
    expect(verifyRelayCredential(s1, 'alice', enc(''))).toBe(false);
    expect(decodeRelaySecret('short')).toBeUndefined();
    expect(decodeRelaySecret('!'.repeat(44))).toBeUndefined();
  });

  it("a peer with its own valid credential cannot claim another peer's id: refused, counted, reported; the owner keeps its traffic", async () => {
    const secret = decodeRelaySecret(newRelaySecret())!;
    const events: RelayEvent[] = [];
    const srv = await RelayServer.listen({ secret, onEvent: (e) => events.push(e) });
    closers.push(() => srv.close());
    const alice = new RelayClient({ url: srv.url, selfId: 'alice', token: relayCredential(secret, 'alice') });
    const bob = new RelayClient({ url: srv.url, selfId: 'bob', token: relayCredential(secret, 'bob') });
    // Mallory holds a valid credential, for "mallory", and claims "alice" with it.
    const mallory = new RelayClient({ url: srv.url, selfId: 'alice', token: relayCredential(secret, 'mallory'), minBackoffMs: 60_000 });
    closers.push(() => alice.close(), () => bob.close(), () => mallory.close());
    const toAlice: [string, number[]][] = [];
    alice.attach((from, p) => toAlice.push([from, [...p]]));
    mallory.attach(() => expect.unreachable('mallory received a datagram meant for alice'));
    alice.start();
    bob.start();
    await Promise.all([alice.ready(), bob.ready()]);
    alice.send('alice', new Uint8Array([0])); // routable once alice's Hello is taken
    await until(() => toAlice.length === 1);
    mallory.start();
    await until(() => srv.stats.refusedClaims === 1);
    expect(events).toEqual([{ kind: 'claim_refused', claimedId: 'alice', taken: true, remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/) as string }]);
    bob.send('alice', new Uint8Array([7]));
    await until(() => toAlice.length === 2);
    expect(toAlice[1]).toEqual(['bob', [7]]);
    expect(alice.stats.connects).toBe(1);
  });
});
