/**
 * Sliding-window replay filter of RFC 6479, as in wireguard-go replay/: a ring of 64-bit blocks (kept
 * here as pairs of 32-bit words). Counters are JS numbers (exact to 2^53, see constants.ts).
 */
const blockBitLog = 6;
const blockBits = 1 << blockBitLog; // 64
const ringBlocks = 1 << 7; // 128
export const WindowSize = (ringBlocks - 1) * blockBits; // 8128
const blockMask = ringBlocks - 1;

export class ReplayFilter {
  private last = 0;
  private readonly ring = new Uint32Array(ringBlocks * 2);

  reset(): void {
    this.last = 0;
    this.ring.fill(0);
  }

  /** True if `counter` is fresh (and records it); false if replayed, too old, or >= limit. */
  validateCounter(counter: number, limit: number): boolean {
    if (!(counter < limit)) return false;
    let indexBlock = Math.floor(counter / blockBits);
    if (counter > this.last) {
      const current = Math.floor(this.last / blockBits);
      const diff = Math.min(indexBlock - current, ringBlocks);
      for (let i = 1; i <= diff; i++) {
        const b = ((current + i) & blockMask) * 2;
        this.ring[b] = 0;
        this.ring[b + 1] = 0;
      }
      this.last = counter;
    } else if (this.last - counter > WindowSize) {
      return false;
    }
    indexBlock &= blockMask;
    const bit = counter % blockBits;
    const word = indexBlock * 2 + (bit >>> 5);
    const mask = (1 << (bit & 31)) >>> 0;
    const old = this.ring[word];
    if ((old & mask) !== 0) return false;
    this.ring[word] = old | mask;
    return true;
  }
}
