import { Backoff } from '../backoff.js';
import { LatticeError, UsageError } from '../errors.js';
import { type Cidr, type IpAddr, addrBits, formatCidr, formatIp, ipFromBigInt, ipToBigInt, parseCidr } from '../net/addr.js';
import { KvConflictError, KvOp, decodeJson, encodeJson, getJson, watchCurrent, type KvBucket, type KvWatch } from './kv.js';

/**
 * IPAM: global pool -> one subnet per namespace -> one address per peer.
 *
 * The same subnet index and host offset are used in both families, so an agent's IPv4 and IPv6
 * addresses pair up: namespace #i gets 10.77.i.0/24 and fd77:0:0:i::/64; the peer at offset o gets
 * 10.77.i.o/32 and fd77:0:0:i::o/128. The IPv4 subnet bounds the offsets (network and broadcast
 * offsets are never handed out).
 *
 * KV layout (bucket "ipam"), every write a create or compare-and-set:
 *   ns.<namespace>          {index}        the namespace's subnet
 *   subnet.<index>          {namespace}    reverse claim, so two processes cannot take the same subnet
 *   addr.<namespace>.<off>  {owner, publicKey}  one per allocated address; deleted when freed
 */

/**
 * A pool in CIDR text ("10.77.0.0/16", "fd77::/48") as the address module parses it: a length is
 * required, host bits are refused, an IPv4-mapped pool is the IPv4 pool. Throws UsageError naming the fault.
 */
export function parsePool(s: string): Cidr {
  const p = parseCidr(s, { bare: 'refuse' });
  if (p.ok) return p.cidr;
  if (p.reason === 'host-bits') throw new UsageError(`${s} has host bits set: use ${p.network}`);
  if (p.reason === 'length' && s.includes('/')) throw new UsageError(`prefix length too long or malformed in ${s}`);
  throw new UsageError(`not a CIDR prefix: ${JSON.stringify(s)} (expected e.g. 10.77.0.0/16)`);
}

/** How many subnets of length `subnetPrefix` the pool holds. */
export function subnetCount(pool: Cidr, subnetPrefix: number): number {
  return 2 ** (subnetPrefix - pool.bits);
}

/** The `index`th subnet of length `subnetPrefix` in the pool. Throws RangeError past the pool. */
export function subnetAt(pool: Cidr, subnetPrefix: number, index: number): Cidr {
  if (!Number.isInteger(index) || index < 0 || index >= subnetCount(pool, subnetPrefix)) {
    throw new RangeError(`subnet index ${index} out of range`);
  }
  const family = pool.addr.family;
  const size = 1n << BigInt(addrBits(family) - subnetPrefix);
  return { addr: ipFromBigInt(ipToBigInt(pool.addr) + BigInt(index) * size, family), bits: subnetPrefix };
}

/** The address `offset` places past the subnet's network address. */
export function hostAt(subnet: Cidr, offset: number): IpAddr {
  return ipFromBigInt(ipToBigInt(subnet.addr) + BigInt(offset), subnet.addr.family);
}

export interface IpamConfig {
  v4Pool: string;
  v6Pool: string;
  /** Per-namespace IPv4 subnet length (default 24). */
  v4SubnetPrefix: number;
  /** Per-namespace IPv6 subnet length (default 64). */
  v6SubnetPrefix: number;
}

export const DEFAULT_IPAM: IpamConfig = { v4Pool: '10.77.0.0/16', v6Pool: 'fd77::/48', v4SubnetPrefix: 24, v6SubnetPrefix: 64 };

/** The checked shape of an IPAM config: pools, how many namespaces, and which host offsets are usable. */
export interface IpamPlan {
  readonly v4: Cidr;
  readonly v6: Cidr;
  readonly v4SubnetPrefix: number;
  readonly v6SubnetPrefix: number;
  readonly namespaces: number;
  readonly firstOffset: number;
  readonly lastOffset: number;
}

/**
 * Check an IPAM config (pools read by `parsePool`, subnets inside their pool, IPv4 subnets at most
 * /30 and IPv6 at most /120) and derive its plan. Throws UsageError naming the fault.
 */
export function planIpam(cfg: IpamConfig = DEFAULT_IPAM): IpamPlan {
  const v4 = parsePool(cfg.v4Pool);
  const v6 = parsePool(cfg.v6Pool);
  if (v4.addr.family !== 4) throw new UsageError(`IPv4 pool ${cfg.v4Pool} is not IPv4`);
  if (v6.addr.family !== 6) throw new UsageError(`IPv6 pool ${cfg.v6Pool} is not IPv6`);
  if (cfg.v4SubnetPrefix < v4.bits || cfg.v4SubnetPrefix > 30) {
    throw new UsageError(`IPv4 subnet /${cfg.v4SubnetPrefix} must be within the pool /${v4.bits} and at most /30`);
  }
  if (cfg.v6SubnetPrefix < v6.bits || cfg.v6SubnetPrefix > 120) {
    throw new UsageError(`IPv6 subnet /${cfg.v6SubnetPrefix} must be within the pool /${v6.bits} and at most /120`);
  }
  const hostsV4 = 2 ** (32 - cfg.v4SubnetPrefix);
  return {
    v4,
    v6,
    v4SubnetPrefix: cfg.v4SubnetPrefix,
    v6SubnetPrefix: cfg.v6SubnetPrefix,
    namespaces: Math.min(subnetCount(v4, cfg.v4SubnetPrefix), Math.min(2 ** 31, subnetCount(v6, cfg.v6SubnetPrefix))),
    // Offset 0 is the subnet's network address and the last one its broadcast address.
    firstOffset: 1,
    lastOffset: hostsV4 - 2,
  };
}

export interface PeerAddress {
  /** Plain addresses (no prefix length). */
  readonly ipv4: string;
  readonly ipv6: string;
  readonly subnetIndex: number;
  readonly offset: number;
}

/** The peer addresses at host `offset` of subnet `subnetIndex`, in canonical text. Throws RangeError out of range. */
export function addressOf(plan: IpamPlan, subnetIndex: number, offset: number): PeerAddress {
  if (offset < plan.firstOffset || offset > plan.lastOffset) throw new RangeError(`host offset ${offset} out of range`);
  return {
    ipv4: formatIp(hostAt(subnetAt(plan.v4, plan.v4SubnetPrefix, subnetIndex), offset)),
    ipv6: formatIp(hostAt(subnetAt(plan.v6, plan.v6SubnetPrefix, subnetIndex), offset)),
    subnetIndex,
    offset,
  };
}

/** Namespace subnet `index` in both families, as canonical CIDR text. Throws RangeError out of range. */
export function namespaceSubnets(plan: IpamPlan, index: number): { v4: string; v6: string } {
  return {
    v4: formatCidr(subnetAt(plan.v4, plan.v4SubnetPrefix, index)),
    v6: formatCidr(subnetAt(plan.v6, plan.v6SubnetPrefix, index)),
  };
}

/** The whole overlay (both pools) as canonical CIDR text: what a launcher treats as "another agent" (DNS rebinding). */
export function overlayPools(plan: IpamPlan): { v4: string; v6: string } {
  return { v4: formatCidr(plan.v4), v6: formatCidr(plan.v6) };
}

/**
 * Candidate order for a free slot: the free slots in [first, last], rotated to start at a random one.
 * Concurrent allocators that saw the same snapshot then spread out instead of all racing for the
 * lowest free slot; a lost create simply moves on to the next candidate.
 */
export function candidateOrder(used: ReadonlySet<number>, first: number, last: number, rand: () => number): number[] {
  const free: number[] = [];
  for (let i = first; i <= last; i++) if (!used.has(i)) free.push(i);
  if (free.length === 0) return free;
  const start = Math.floor(rand() * free.length) % free.length;
  return [...free.slice(start), ...free.slice(0, start)];
}

/** No free subnet or address is left. Code EIPAM_EXHAUSTED. */
export class IpamExhaustedError extends LatticeError {
  override readonly name = 'IpamExhaustedError';
  constructor(message: string) {
    super('EIPAM_EXHAUSTED', message);
  }
}

interface AddrClaim {
  owner: string;
  publicKey: string;
}

/**
 * Allocation over the "ipam" bucket. Every decision is a create on the bucket; the optional watch-fed
 * cache of used offsets only picks the first candidates (a stale entry costs one failed create), and
 * later rounds and the exhaustion verdict re-read the bucket itself.
 */
export class Ipam {
  private used?: Map<string, Set<number>>;
  private readonly indexes = new Map<string, number>();
  private readonly claiming = new Map<string, Promise<number>>();
  private readonly reserved = new Map<string, Set<number>>();
  private watch?: KvWatch;

  constructor(
    private readonly bucket: KvBucket,
    readonly plan: IpamPlan,
    private readonly rand: () => number = Math.random,
  ) {}

  /** Follow allocations with a KV watch so allocating needs no listing of the bucket. */
  async startCache(): Promise<void> {
    const used = new Map<string, Set<number>>();
    this.watch = await watchCurrent(
      this.bucket,
      'addr.*.*',
      (c) => {
        const [, ns, off] = c.key.split('.');
        let set = used.get(ns);
        if (!set) used.set(ns, (set = new Set()));
        if (c.op === KvOp.Put) set.add(Number(off));
        else set.delete(Number(off));
      },
    );
    this.used = used;
  }

  stopCache(): void {
    this.watch?.stop();
    this.used = undefined;
  }

  /** The namespace's subnet index, claiming a free subnet on first use. */
  async namespaceIndex(namespace: string): Promise<number> {
    // A namespace keeps its subnet for good (ns.* keys are never deleted), so the answer can be memoized;
    // concurrent first uses in this process share one claim.
    const known = this.indexes.get(namespace);
    if (known !== undefined) return known;
    let p = this.claiming.get(namespace);
    if (!p) {
      p = this.claimNamespace(namespace).finally(() => this.claiming.delete(namespace));
      this.claiming.set(namespace, p);
    }
    return p;
  }

  private async claimNamespace(namespace: string): Promise<number> {
    for (;;) {
      const have = await getJson<{ index: number }>(this.bucket, `ns.${namespace}`);
      if (have) {
        this.indexes.set(namespace, have.value.index);
        return have.value.index;
      }
      const used = new Set((await this.bucket.keys('subnet.*')).map((k) => Number(k.slice('subnet.'.length))));
      const order = candidateOrder(used, 0, this.plan.namespaces - 1, () => 0);
      if (order.length === 0) {
        throw new IpamExhaustedError(`no free subnet for namespace ${namespace}: all ${this.plan.namespaces} subnets of ${formatCidr(this.plan.v4)} are taken`);
      }
      let claimed: { index: number; revision: number };
      try {
        claimed = { index: order[0], revision: await this.bucket.create(`subnet.${order[0]}`, encodeJson({ namespace })) };
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err;
        continue; // someone took that subnet: maybe for this very namespace, so look again
      }
      try {
        await this.bucket.create(`ns.${namespace}`, encodeJson({ index: claimed.index }));
        this.indexes.set(namespace, claimed.index);
        return claimed.index;
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err;
        // Another process named a subnet for this namespace first: give ours back and use theirs.
        await this.bucket.delete(`subnet.${claimed.index}`, claimed.revision).catch(() => undefined);
      }
    }
  }

  /**
   * Allocate a free address in the namespace's subnet for `owner`. Concurrent allocations in this
   * process reserve distinct candidates, so they never collide with each other; across processes
   * the creates decide. The lowest free offset goes first: freed addresses are reused.
   */
  async allocate(namespace: string, owner: string, publicKey: string): Promise<PeerAddress> {
    const index = await this.namespaceIndex(namespace);
    const claim = encodeJson({ owner, publicKey } satisfies AddrClaim);
    const capacity = this.plan.lastOffset - this.plan.firstOffset + 1;
    let reserved = this.reserved.get(namespace);
    if (!reserved) this.reserved.set(namespace, (reserved = new Set()));
    let collided = false;
    const settle = new Backoff({ initialMs: 5, maxMs: 50 });
    for (let round = 0; round < 50; round++) {
      // The watch-fed cache is good enough for the first rounds; after that, list the bucket itself.
      const cached = round < 4 && this.used ? (this.used.get(namespace) ?? new Set<number>()) : undefined;
      let used = cached ? new Set(cached) : await this.usedOffsets(namespace);
      if (cached && used.size >= capacity) used = await this.usedOffsets(namespace);
      if (used.size >= capacity) {
        const sn = namespaceSubnets(this.plan, index);
        throw new IpamExhaustedError(`namespace ${namespace} has no free address left in ${sn.v4} (${used.size} allocated); revoke agents or use a larger subnet`);
      }
      for (const r of reserved) used.add(r);
      // Lowest free first (freed addresses are reused); once another process beat us to a slot,
      // random free slots, so two processes do not walk the same sequence in lockstep.
      const order = candidateOrder(used, this.plan.firstOffset, this.plan.lastOffset, collided ? this.rand : () => 0);
      if (order.length === 0) {
        // Every free slot is being tried by another allocation here: wait for them to settle.
        await settle.wait();
        continue;
      }
      for (const offset of order.slice(0, 4)) {
        if (reserved.has(offset)) continue;
        reserved.add(offset);
        try {
          await this.bucket.create(`addr.${namespace}.${offset}`, claim);
          this.noteUsed(namespace, offset);
          return addressOf(this.plan, index, offset);
        } catch (err) {
          if (!(err instanceof KvConflictError)) throw err;
          collided = true;
          this.noteUsed(namespace, offset);
        } finally {
          reserved.delete(offset);
        }
      }
    }
    throw new LatticeError('EIPAM_CONTENTION', `could not allocate an address in namespace ${namespace}: too much contention, retry`);
  }

  /** Our own create (or a lost race) shows a slot is taken before the watch says so. */
  private noteUsed(namespace: string, offset: number): void {
    if (!this.used) return;
    let set = this.used.get(namespace);
    if (!set) this.used.set(namespace, (set = new Set()));
    set.add(offset);
  }

  /** Free an address if `owner` still holds it (compare-and-set on the claim's revision). */
  async free(namespace: string, offset: number, owner: string): Promise<boolean> {
    const key = `addr.${namespace}.${offset}`;
    const e = await this.bucket.get(key);
    if (!e || decodeJson<AddrClaim>(e.value).owner !== owner) return false;
    try {
      await this.bucket.delete(key, e.revision);
      return true;
    } catch (err) {
      if (err instanceof KvConflictError) return false;
      throw err;
    }
  }

  async usedOffsets(namespace: string): Promise<Set<number>> {
    const prefix = `addr.${namespace}.`;
    return new Set((await this.bucket.keys(`${prefix}*`)).map((k) => Number(k.slice(prefix.length))));
  }
}
