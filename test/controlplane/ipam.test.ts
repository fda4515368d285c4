import { describe, expect, it } from 'vitest';
import {
  DEFAULT_IPAM,
  Ipam,
  IpamExhaustedError,
  addressOf,
  candidateOrder,
  namespaceSubnets,
  parsePool,
  planIpam,
  subnetAt,
  subnetCount,
} from '../../src/controlplane/ipam.js';
import { MemoryKvStore } from '../../src/controlplane/kv.js';
import { formatCidr, formatIp } from '../../src/net/addr.js';

describe('address math', () => {
  it('reads pools with the address module: odd spellings get its answers', () => {
    expect(() => parsePool('10.77.0.256/16')).toThrow(/not a CIDR/);
    expect(() => parsePool('010.77.0.0/16')).toThrow(/not a CIDR/); // leading zeros refused
    expect(() => parsePool('fd77::%eth0/48')).toThrow(/not a CIDR/); // no zone in a pool
    expect(formatCidr(parsePool('::ffff:10.77.0.0/112'))).toBe('10.77.0.0/16'); // IPv4-mapped is the IPv4 pool
    expect(() => planIpam({ ...DEFAULT_IPAM, v6Pool: '::ffff:10.78.0.0/112' })).toThrow(/is not IPv6/);
  });

  it('rejects CIDRs with host bits or bad lengths', () => {
    expect(() => parsePool('10.77.0.1/16')).toThrow(/host bits/);
    expect(() => parsePool('10.77.0.0/33')).toThrow(/too long/);
    expect(() => parsePool('10.77.0.0')).toThrow(/CIDR/);
    expect(parsePool('fd77::/48').bits).toBe(48);
  });

  it('carves the pool into per-namespace subnets in both families', () => {
    const v4 = parsePool('10.77.0.0/16');
    expect(subnetCount(v4, 24)).toBe(256);
    expect(formatIp(subnetAt(v4, 24, 255).addr)).toBe('10.77.255.0');
    expect(() => subnetAt(v4, 24, 256)).toThrow(RangeError);
    const plan = planIpam();
    expect(plan.namespaces).toBe(256);
    expect(plan.firstOffset).toBe(1);
    expect(plan.lastOffset).toBe(254);
    expect(addressOf(plan, 0, 1)).toMatchObject({ ipv4: '10.77.0.1', ipv6: 'fd77::1' });
    expect(addressOf(plan, 3, 2)).toMatchObject({ ipv4: '10.77.3.2', ipv6: 'fd77:0:0:3::2' });
    expect(addressOf(plan, 1, 254)).toMatchObject({ ipv4: '10.77.1.254', ipv6: 'fd77:0:0:1::fe' });
    expect(() => addressOf(plan, 0, 0)).toThrow(RangeError);
    expect(() => addressOf(plan, 0, 255)).toThrow(RangeError);
    expect(namespaceSubnets(plan, 2)).toEqual({ v4: '10.77.2.0/24', v6: 'fd77:0:0:2::/64' });
  });

  it('refuses plans that do not fit', () => {
    expect(() => planIpam({ v4Pool: '10.0.0.0/24', v6Pool: 'fd77::/48', v4SubnetPrefix: 16, v6SubnetPrefix: 64 })).toThrow(/within the pool/);
    expect(() => planIpam({ v4Pool: 'fd77::/48', v6Pool: 'fd77::/48', v4SubnetPrefix: 24, v6SubnetPrefix: 64 })).toThrow(/not IPv4/);
    expect(() => planIpam({ v4Pool: '10.0.0.0/16', v6Pool: 'fd77::/48', v4SubnetPrefix: 31, v6SubnetPrefix: 64 })).toThrow(/\/30/);
  });

  it('candidate order lists each free slot once, starting at a random one', () => {
    const used = new Set([1, 2, 5]);
    const order = candidateOrder(used, 1, 6, () => 0.5);
    expect([...order].sort()).toEqual([3, 4, 6]);
    expect(order[0]).toBe(4);
    expect(candidateOrder(new Set([1, 2]), 1, 2, () => 0.99)).toEqual([]);
  });
});

describe('Ipam over a KV bucket', () => {
  const small = { v4Pool: '10.9.0.0/28', v6Pool: 'fd09::/48', v4SubnetPrefix: 29, v6SubnetPrefix: 64 };

  it('allocates distinct addresses, errors clearly on exhaustion, reuses freed ones', async () => {
    const ipam = new Ipam(await new MemoryKvStore().bucket('ipam'), planIpam(small));
    const got = [];
    for (let i = 0; i < 6; i++) got.push(await ipam.allocate('ns', `a.ns.p${i}`, 'pk'));
    expect(new Set(got.map((a) => a.ipv4)).size).toBe(6);
    for (const a of got) expect(a.ipv4).toMatch(/^10\.9\.0\.[1-6]$/);
    await expect(ipam.allocate('ns', 'a.ns.p6', 'pk')).rejects.toThrow(IpamExhaustedError);
    await expect(ipam.allocate('ns', 'a.ns.p6', 'pk')).rejects.toThrow(/no free address left in 10\.9\.0\.0\/29/);
    // Only the owner frees.
    expect(await ipam.free('ns', got[2].offset, 'a.ns.someone-else')).toBe(false);
    expect(await ipam.free('ns', got[2].offset, 'a.ns.p2')).toBe(true);
    const again = await ipam.allocate('ns', 'a.ns.p7', 'pk');
    expect(again.ipv4).toBe(got[2].ipv4);
  });

  it('gives each namespace its own subnet and refuses a third when the pool has two', async () => {
    const ipam = new Ipam(await new MemoryKvStore().bucket('ipam'), planIpam(small));
    const [x, y] = await Promise.all([ipam.namespaceIndex('x'), ipam.namespaceIndex('y')]);
    expect(new Set([x, y])).toEqual(new Set([0, 1]));
    expect(await ipam.namespaceIndex('x')).toBe(x);
    const ax = await ipam.allocate('x', 'a.x.p', 'pk');
    const lastOctet = Number(ax.ipv4.split('.')[3]);
    expect(lastOctet >= x * 8 + 1 && lastOctet <= x * 8 + 6).toBe(true);
    await expect(ipam.namespaceIndex('z')).rejects.toThrow(/no free subnet for namespace z/);
  });

  it('concurrent allocations never share an address', async () => {
    const ipam = new Ipam(await new MemoryKvStore().bucket('ipam'), planIpam());
    const all = await Promise.all(Array.from({ length: 200 }, (_, i) => ipam.allocate('busy', `a.busy.p${i}`, 'pk')));
    expect(new Set(all.map((a) => a.ipv4)).size).toBe(200);
    expect(new Set(all.map((a) => a.ipv6)).size).toBe(200);
  });
});
