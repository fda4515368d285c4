/** Receiver index -> handshake or keypair (wireguard-go device/indextable.go). */
import type { Crypto } from './crypto.js';

export interface IndexEntry<P, K> {
  peer: P;
  /** Set while the index names an in-flight handshake. */
  handshake: boolean;
  /** Set once the index names a session. */
  keypair?: K;
}

export class IndexTable<P, K> {
  private readonly table = new Map<number, IndexEntry<P, K>>();
  constructor(private readonly crypto: Crypto) {}

  get size(): number {
    return this.table.size;
  }

  lookup(index: number): IndexEntry<P, K> | undefined {
    return this.table.get(index);
  }

  /** A fresh random index for a new handshake of `peer`. */
  newIndexForHandshake(peer: P): number {
    for (;;) {
      const b = this.crypto.randomBytes(4);
      const index = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
      if (!this.table.has(index)) {
        this.table.set(index, { peer, handshake: true });
        return index;
      }
    }
  }

  swapIndexForKeypair(index: number, keypair: K): void {
    const e = this.table.get(index);
    if (!e) return;
    e.handshake = false;
    e.keypair = keypair;
  }

  delete(index: number): void {
    this.table.delete(index);
  }
}
