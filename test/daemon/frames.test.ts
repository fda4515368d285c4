/** The exec stream's frames (src/daemon/frames.ts): round trip across any split, and malformed headers. */
import { describe, it, expect } from 'vitest';
import { encodeData, encodeFrame, encodeResize, FrameDecoder, MAX_FRAME, Stream } from '../../src/daemon/frames.js';
import { seededRandom } from '../support/random.js';

describe('exec frames', () => {
  it('decode what was encoded, whatever the chunking (fed in random pieces, down to one byte)', () => {
    const rnd = seededRandom();
    const sent = [
      { stream: Stream.stdout, payload: Buffer.from(rnd.bytes(3000)) },
      { stream: Stream.stdin, payload: Buffer.alloc(0) },
      { stream: Stream.stderr, payload: Buffer.from('err\n') },
      { stream: 9, payload: Buffer.from('unknown ids pass the decoder; the routes drop them') },
      { stream: Stream.exit, payload: Buffer.from('{"exitCode":3}') },
    ];
    const wire = Buffer.concat(sent.map((f) => encodeFrame(f.stream as 0, f.payload)));
    const d = new FrameDecoder();
    const got = [];
    for (let i = 0; i < wire.length; ) {
      const n = 1 + rnd.int(64);
      got.push(...d.push(wire.subarray(i, i + n)));
      i += n;
    }
    expect(got).toEqual(sent);
    expect(d.broken).toBeUndefined();
  });

  it('splits data over MAX_FRAME, encodes resize as cols,rows big-endian', () => {
    const big = Buffer.alloc(MAX_FRAME + 5, 7);
    const frames = encodeData(Stream.stdout, big);
    expect(frames.map((f) => f.readUInt32BE(4))).toEqual([MAX_FRAME, 5]);
    expect([...encodeResize(100, 30)]).toEqual([5, 0, 0, 0, 0, 0, 0, 4, 0, 100, 0, 30]);
    expect(encodeData(Stream.stdout, Buffer.alloc(0))).toEqual([]);
  });

  it('a header with reserved bytes set or a length over MAX_FRAME breaks the stream: no frame after it', () => {
    const d = new FrameDecoder();
    const ok = encodeFrame(Stream.stdin, Buffer.from('a'));
    const bad = Buffer.from([0, 1, 0, 0, 0, 0, 0, 1, 65]);
    expect(d.push(Buffer.concat([ok, bad, ok]))).toHaveLength(1);
    expect(d.broken).toMatch(/bytes 1-3/);
    expect(d.push(ok)).toEqual([]);
    const big = new FrameDecoder();
    const header = Buffer.alloc(8);
    header.writeUInt32BE(MAX_FRAME + 1, 4);
    expect(big.push(header)).toEqual([]);
    expect(big.broken).toMatch(/over/);
  });
});
