/**
 * Cryptokey routing table: longest-prefix match from an address to a peer, IPv4 and IPv6
 * (wireguard-go device/allowedips.go). A plain binary trie, one per family; lookups walk at most
 * 32 or 128 nodes, which is cheap next to the AEAD.
 */
import { formatPrefix, type Prefix } from '../net/addr.js';

interface Node<P> {
  zero?: Node<P>;
  one?: Node<P>;
  peer?: P;
}

export class AllowedIPs<P> {
  private v4: Node<P> = {};
  private v6: Node<P> = {};

  private root(len: number): Node<P> {
    return len === 4 ? this.v4 : this.v6;
  }

  /** Insert (or move) a prefix to `peer`; a prefix belongs to exactly one peer. */
  insert(prefix: Prefix, peer: P): void {
    let n = this.root(prefix.ip.length);
    for (let i = 0; i < prefix.bits; i++) {
      const bit = (prefix.ip[i >> 3] >> (7 - (i & 7))) & 1;
      const key = bit ? 'one' : 'zero';
      n = n[key] ??= {};
    }
    n.peer = peer;
  }

  lookup(ip: Uint8Array): P | undefined {
    if (ip.length !== 4 && ip.length !== 16) return undefined;
    let n: Node<P> | undefined = this.root(ip.length);
    let best: P | undefined;
    const bits = ip.length * 8;
    for (let i = 0; n; i++) {
      if (n.peer !== undefined) best = n.peer;
      if (i === bits) break;
      n = (ip[i >> 3] >> (7 - (i & 7))) & 1 ? n.one : n.zero;
    }
    return best;
  }

  removeByPeer(peer: P): void {
    const prune = (n: Node<P>): boolean => {
      if (n.peer === peer) n.peer = undefined;
      if (n.zero && prune(n.zero)) n.zero = undefined;
      if (n.one && prune(n.one)) n.one = undefined;
      return n.peer === undefined && !n.zero && !n.one;
    };
    prune(this.v4);
    prune(this.v6);
  }

  entriesForPeer(peer: P): string[] {
    const out: string[] = [];
    const walk = (n: Node<P>, bytes: Uint8Array, depth: number): void => {
      if (n.peer === peer) out.push(formatPrefix({ ip: Uint8Array.from(bytes), bits: depth }));
      for (const [child, bit] of [[n.zero, 0], [n.one, 1]] as const) {
        if (!child) continue;
        const b = Uint8Array.from(bytes);
        if (bit) b[depth >> 3] |= 1 << (7 - (depth & 7));
        walk(child, b, depth + 1);
      }
    };
    walk(this.v4, new Uint8Array(4), 0);
    walk(this.v6, new Uint8Array(16), 0);
    return out;
  }
}
