/**
 * The exec stream's wire format (pure: bytes in, frames out). After `POST /v1/sandboxes/{ref}/exec` is
 * answered `101 Switching Protocols` (Upgrade: lattice-exec), both directions of the connection carry
 * frames shaped like Docker's attach stream (moby's stdcopy), with more stream ids:
 *
 *   0        1  2  3  4          8
 *   ┌────────┬──┬──┬──┬──────────┬────────────────────────┐
 *   │ stream │ 0│ 0│ 0│ length   │ payload (length bytes) │   length: uint32, big-endian, <= MAX_FRAME
 *   └────────┴──┴──┴──┴──────────┴────────────────────────┘
 *
 *   client -> daemon   0 stdin    bytes for the process's stdin; an empty payload closes it (EOF)
 *                      4 signal   a signal name in ASCII ("SIGTERM"), sent to the process in the sandbox
 *                      5 resize   TTY only: cols, rows as two uint16 big-endian (4 bytes)
 *   daemon -> client   1 stdout   the process's stdout (TTY: the terminal's output, stdout and stderr as one)
 *                      2 stderr   the process's stderr (never with a TTY)
 *                      3 exit     the last frame: JSON ExecExit { exitCode, error? }; the daemon then closes
 *
 * A frame of an unknown stream id is skipped and counted; a length over MAX_FRAME or bytes 1-3 not zero
 * makes the stream unreadable (the decoder stops and says so: the connection is closed).
 */

/** The `Upgrade` token of an exec request. */
export const EXEC_UPGRADE = 'lattice-exec';

/** Stream ids (the first byte of a frame). */
export const Stream = { stdin: 0, stdout: 1, stderr: 2, exit: 3, signal: 4, resize: 5 } as const;
export type StreamId = (typeof Stream)[keyof typeof Stream];

/** Header bytes before each payload. */
export const FRAME_HEADER = 8;
/** Largest payload of one frame (bytes); writers split larger chunks. */
export const MAX_FRAME = 1 << 20;

/** Payload of the exit frame. exitCode: the process's status (128+N after signal N; 127/126: did not start). */
export interface ExecExit {
  exitCode: number;
  /** Why the command did not run or the exec failed (code: src/errors.ts). */
  error?: { code: string; message: string };
}

/** One frame on the wire (`length` bytes of payload may be split across chunks): header + payload. */
export function encodeFrame(stream: StreamId, payload: Uint8Array = new Uint8Array(0)): Buffer {
  if (payload.length > MAX_FRAME) throw new RangeError(`frame payload of ${payload.length} bytes is over ${MAX_FRAME}; split it`);
  const out = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  out.writeUInt32BE(0, 0);
  out[0] = stream;
  out.writeUInt32BE(payload.length, 4);
  out.set(payload, FRAME_HEADER);
  return out;
}

/** Frames of `chunk`, split at MAX_FRAME (an empty chunk is no frame: stdin's EOF is sent on purpose). */
export function encodeData(stream: StreamId, chunk: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < chunk.length; i += MAX_FRAME) out.push(encodeFrame(stream, chunk.subarray(i, i + MAX_FRAME)));
  return out;
}

/** The resize payload: cols and rows, uint16 big-endian each. */
export function encodeResize(cols: number, rows: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(Math.max(0, Math.min(0xffff, cols)), 0);
  b.writeUInt16BE(Math.max(0, Math.min(0xffff, rows)), 2);
  return encodeFrame(Stream.resize, b);
}

export interface Frame {
  stream: number;
  payload: Buffer;
}

/**
 * Incremental frame parser: push() bytes as they arrive, get the complete frames. After a malformed header
 * `broken` holds the reason and push() returns nothing more.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  broken: string | undefined;

  push(chunk: Buffer): Frame[] {
    if (this.broken) return [];
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const frames: Frame[] = [];
    while (this.buf.length >= FRAME_HEADER) {
      if (this.buf[1] !== 0 || this.buf[2] !== 0 || this.buf[3] !== 0) {
        this.broken = 'frame header bytes 1-3 are not zero';
        return frames;
      }
      const length = this.buf.readUInt32BE(4);
      if (length > MAX_FRAME) {
        this.broken = `frame of ${length} bytes is over ${MAX_FRAME}`;
        return frames;
      }
      if (this.buf.length < FRAME_HEADER + length) break;
      frames.push({ stream: this.buf[0]!, payload: Buffer.from(this.buf.subarray(FRAME_HEADER, FRAME_HEADER + length)) });
      this.buf = this.buf.subarray(FRAME_HEADER + length);
    }
    return frames;
  }
}
