/**
 * Relay framing over TCP (our own, small): every frame is
 *
 *   | length u32 BE (of what follows) | type u8 | idLen u8 | id (UTF-8) | payload |
 *
 *   Hello  client -> server: id = the client's peer id, payload = that id's relay credential (relay-credential.ts)
 *   Data   client -> server: id = destination peer; server -> client: id = source peer; payload = one
 *          datagram (a WireGuard packet or a STUN connectivity check)
 *
 * The decoder is a byte-fed state machine; a frame over MaxFrame means a broken or hostile stream.
 */
export const FrameType = { Hello: 1, Data: 2 } as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const MaxFrame = 65_535 + 2 + 255;
export const MaxIdLength = 255;

export interface Frame {
  type: FrameType;
  id: string;
  payload: Uint8Array;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeFrame(type: FrameType, id: string, payload: Uint8Array): Uint8Array {
  const idb = enc.encode(id);
  if (idb.length > MaxIdLength) throw new RangeError('relay peer id longer than 255 bytes');
  const len = 2 + idb.length + payload.length;
  if (len > MaxFrame) throw new RangeError('relay frame too large');
  const out = new Uint8Array(4 + len);
  new DataView(out.buffer).setUint32(0, len);
  out[4] = type;
  out[5] = idb.length;
  out.set(idb, 6);
  out.set(payload, 6 + idb.length);
  return out;
}

/** Accumulates stream chunks and yields whole frames. `error` is set (and stays) on a broken stream. */
export class FrameDecoder {
  private buf: Uint8Array = new Uint8Array(0);
  error?: string;
  invalid = 0;

  push(chunk: Uint8Array): Frame[] {
    if (this.error) return [];
    const b = this.buf.length ? concat(this.buf, chunk) : chunk;
    const out: Frame[] = [];
    let off = 0;
    while (b.length - off >= 4) {
      const len = ((b[off] << 24) >>> 0) + (b[off + 1] << 16) + (b[off + 2] << 8) + b[off + 3];
      if (len < 2 || len > MaxFrame) {
        this.error = `bad frame length ${len}`;
        this.buf = new Uint8Array(0);
        return out;
      }
      if (b.length - off - 4 < len) break;
      const f = b.subarray(off + 4, off + 4 + len);
      off += 4 + len;
      const type = f[0];
      const idLen = f[1];
      if ((type !== FrameType.Hello && type !== FrameType.Data) || 2 + idLen > f.length) {
        this.invalid++;
        continue;
      }
      out.push({ type, id: dec.decode(f.subarray(2, 2 + idLen)), payload: Uint8Array.from(f.subarray(2 + idLen)) });
    }
    this.buf = off < b.length ? Uint8Array.from(b.subarray(off)) : new Uint8Array(0);
    return out;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const o = new Uint8Array(a.length + b.length);
  o.set(a);
  o.set(b, a.length);
  return o;
}
