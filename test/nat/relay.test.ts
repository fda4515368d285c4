import { afterEach, describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder, FrameType } from '../../src/nat/relay-frame.js';
import { RelayClient } from '../../src/nat/relay-client.js';
import { RelayServer } from '../../src/nat/relay-server.js';
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

  it('forwards datagrams between ids, drops unknown destinations, enforces the token, reconnects', async () => {
    const srv = await RelayServer.listen({ token: 't0k' });
    closers.push(() => srv.close());
    const a = new RelayClient({ url: srv.url, selfId: 'alice', token: 't0k' });
    const b = new RelayClient({ url: srv.url, selfId: 'bob', token: 't0k' });
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
