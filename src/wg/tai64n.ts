/** TAI64N timestamps (12 bytes, big-endian), as the initiation's replay-protection token. */
export const TimestampSize = 12;
const tai64nBase = 2n ** 62n + 10n;
/** Round down to ~16 ms so the timestamp does not leak fine-grained clock data (as wireguard-go does). */
const whitenerMask = 0x1000000 - 1;

export function tai64n(wallMs: number): Uint8Array {
  const out = new Uint8Array(TimestampSize);
  const secs = Math.floor(wallMs / 1000);
  const nanos = ((wallMs - secs * 1000) * 1_000_000) & ~whitenerMask;
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, tai64nBase + BigInt(secs));
  dv.setUint32(8, nanos >>> 0);
  return out;
}

/** a > b, bytewise big-endian. */
export function timestampAfter(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < TimestampSize; i++) {
    if (a[i] !== b[i]) return a[i] > b[i];
  }
  return false;
}
