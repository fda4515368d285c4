/**
 * NAT topologies in network namespaces, built and torn down by the tests (prefix "ltnat").
 *
 *            ns <p>-pub: bridge br0 198.18.0.1/24  (coturn STUN :3478, nats-server :4222, relay :4443)
 *             |                          |
 *   ns <p>-ra: wan 198.18.0.11     ns <p>-rb: wan 198.18.0.12      routers: ip_forward, nftables NAT
 *              lan 10.77.1.1                  lan 10.77.2.1        + "drop unsolicited input on wan"
 *             |                          |
 *   ns <p>-ha: eth0 10.77.1.2      ns <p>-hb: eth0 10.77.2.2       the sites: one lattice device each
 *
 * NAT kinds: "cone" = `masquerade` (port-preserving, endpoint-independent mapping), "symmetric" =
 * `masquerade random` (a new random port per destination). "lan" = no router: the host sits on the bridge.
 *
 * The routers drop new inbound connections on their WAN (`ct state new drop` in input), as home routers
 * do. Without it Linux conntrack breaks hole punching: a peer's early probe to the router's own address
 * creates a conntrack entry that clashes with the router's later outbound mapping, which masquerade then
 * moves to another port (verified here).
 */
import { execa, type Options } from 'execa';
import { createNetns, deleteNetns, ip, listNetns } from '../../src/netns/ip.js';

export type SiteNat = 'cone' | 'symmetric' | 'lan';

export interface Site {
  name: 'a' | 'b';
  hostNs: string;
  routerNs?: string;
  lanAddress: string;
  wanAddress: string;
  lanPrefix: string;
  nat: SiteNat;
}

export interface Topology {
  prefix: string;
  pubNs: string;
  pubAddress: string;
  sites: { a: Site; b: Site };
  destroy(): Promise<void>;
}

export const exec = (ns: string, cmd: string, args: string[], opts: Options = {}) =>
  execa('ip', ['netns', 'exec', ns, cmd, ...args], { stdin: 'ignore', ...opts });

function natRules(site: Site): string {
  const random = site.nat === 'symmetric' ? ' random' : '';
  return [
    'table ip ltnat {',
    ' chain post {',
    '  type nat hook postrouting priority 100',
    `  ip saddr ${site.lanPrefix} oifname "wan" masquerade${random}`,
    ' }',
    ' chain input {',
    '  type filter hook input priority 0',
    '  iifname "wan" ct state new drop',
    ' }',
    '}',
    '',
  ].join('\n');
}

/** Install the router's rules; with `replace`, flush and re-add in one nft transaction (atomic). */
export async function applyNat(site: Site, replace = false): Promise<void> {
  if (!site.routerNs) return;
  const rules = (replace ? 'flush ruleset\n' : '') + natRules(site);
  await execa('ip', ['netns', 'exec', site.routerNs, 'nft', '-f', '-'], { input: rules });
}

/** Delete leftovers from earlier runs that died before cleanup (same prefix). */
export async function reapNetns(prefix: string): Promise<void> {
  for (const n of await listNetns()) if (n.startsWith(prefix)) await deleteNetns(n);
}

export async function buildTopology(prefix: string, nats: { a: SiteNat; b: SiteNat }): Promise<Topology> {
  await reapNetns(prefix);
  const pubNs = `${prefix}-pub`;
  const made: string[] = [];
  const ns = async (n: string) => {
    await createNetns(n);
    made.push(n);
    await ip(['link', 'set', 'lo', 'up'], n);
  };
  const destroy = async () => {
    for (const n of made.reverse()) await deleteNetns(n).catch(() => undefined);
  };
  try {
    await ns(pubNs);
    await ip(['link', 'add', 'br0', 'type', 'bridge'], pubNs);
    await ip(['addr', 'add', '198.18.0.1/24', 'dev', 'br0'], pubNs);
    await ip(['link', 'set', 'br0', 'up'], pubNs);
    const mkSite = async (name: 'a' | 'b', nat: SiteNat): Promise<Site> => {
      const n = name === 'a' ? 1 : 2;
      const hostNs = `${prefix}-h${name}`;
      await ns(hostNs);
      if (nat === 'lan') {
        const addr = `198.18.0.${20 + n}`;
        await ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `h${name}`, 'netns', pubNs], hostNs);
        await ip(['link', 'set', `h${name}`, 'master', 'br0', 'up'], pubNs);
        await ip(['addr', 'add', `${addr}/24`, 'dev', 'eth0'], hostNs);
        await ip(['link', 'set', 'eth0', 'up'], hostNs);
        return { name, hostNs, lanAddress: addr, wanAddress: addr, lanPrefix: '198.18.0.0/24', nat };
      }
      const routerNs = `${prefix}-r${name}`;
      await ns(routerNs);
      const wan = `198.18.0.${10 + n}`;
      const lanPrefix = `10.77.${n}.0/24`;
      await ip(['link', 'add', 'wan', 'type', 'veth', 'peer', 'name', `r${name}`, 'netns', pubNs], routerNs);
      await ip(['link', 'set', `r${name}`, 'master', 'br0', 'up'], pubNs);
      await ip(['addr', 'add', `${wan}/24`, 'dev', 'wan'], routerNs);
      await ip(['link', 'set', 'wan', 'up'], routerNs);
      await ip(['link', 'add', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', hostNs], routerNs);
      await ip(['addr', 'add', `10.77.${n}.1/24`, 'dev', 'lan'], routerNs);
      await ip(['link', 'set', 'lan', 'up'], routerNs);
      await ip(['addr', 'add', `10.77.${n}.2/24`, 'dev', 'eth0'], hostNs);
      await ip(['link', 'set', 'eth0', 'up'], hostNs);
      await ip(['route', 'add', 'default', 'via', `10.77.${n}.1`], hostNs);
      await exec(routerNs, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
      const site: Site = { name, hostNs, routerNs, lanAddress: `10.77.${n}.2`, wanAddress: wan, lanPrefix, nat };
      await applyNat(site);
      return site;
    };
    const a = await mkSite('a', nats.a);
    const b = await mkSite('b', nats.b);
    return { prefix, pubNs, pubAddress: '198.18.0.1', sites: { a, b }, destroy };
  } catch (err) {
    await destroy();
    throw err;
  }
}

/**
 * A new NAT mapping for the site, as a DHCP renumbering of the router's WAN would give: the WAN address
 * moves (masquerade forgets every mapping made with the old address) and the NAT rules are flushed and
 * re-applied. The re-apply is one atomic transaction: a packet seen while no NAT rule exists gets a
 * conntrack entry without NAT that later packets of the flow keep using (a stuck un-NATed flow).
 */
export async function renumberWan(site: Site, newWan: string): Promise<void> {
  if (!site.routerNs) throw new Error('a LAN site has no NAT to renumber');
  const r = site.routerNs;
  await ip(['addr', 'del', `${site.wanAddress}/24`, 'dev', 'wan'], r);
  await ip(['addr', 'add', `${newWan}/24`, 'dev', 'wan'], r);
  await applyNat(site, true);
  site.wanAddress = newWan;
}
