import { describe, it, expect } from 'vitest';
import { routerRuleset, routerTableName } from '../../src/router/nftables.js';

const base = { table: 'lattice_router_gw', tun: 'lattice0', own: { ipv4: '10.77.0.1', ipv6: 'fd77::1' }, overlay: ['10.77.0.0/16', 'fd77::/48'], owner: { pid: 42, startTicks: 7 } };

describe('router nftables ruleset', () => {
  it('a subnet router forwards only its routes from the TUN, never the overlay, replies only into it, and masquerades', () => {
    const t = routerRuleset({ ...base, routes: ['10.200.0.0/24'] });
    expect(t).toContain('table inet lattice_router_gw {');
    expect(t).toContain('iifname "lattice0" meta nfproto ipv4 ip daddr 10.77.0.0/16 drop');
    expect(t).toContain('iifname "lattice0" meta nfproto ipv4 ip daddr { 10.200.0.0/24 } accept');
    expect(t).toContain('iifname "lattice0" meta nfproto ipv6 drop');
    expect(t).not.toContain('meta nfproto ipv6 accept');
    expect(t).toContain('oifname "lattice0" ct state established,related accept');
    expect(t).toContain('iifname "lattice0" meta nfproto ipv4 ip daddr != 10.77.0.1 drop');
    expect(t).toContain('masquerade');
    expect(t).toContain('comment "lattice-up 42:7"');
  });
  it('an exit node forwards anything outside the overlay', () => {
    const t = routerRuleset({ ...base, routes: ['0.0.0.0/0', '::/0'] });
    expect(t).toContain('iifname "lattice0" meta nfproto ipv4 accept');
    expect(t).toContain('iifname "lattice0" meta nfproto ipv6 accept');
    expect(t.indexOf('ip daddr 10.77.0.0/16 drop')).toBeLessThan(t.indexOf('meta nfproto ipv4 accept'));
  });
  it('refuses input that is not plain', () => {
    expect(() => routerRuleset({ ...base, tun: 'x"; flush ruleset', routes: [] })).toThrow(/unusual/);
    expect(() => routerRuleset({ ...base, routes: ['10.0.0.0/8 } accept'] })).toThrow(/unusual/);
  });
  it('names the table after the node', () => {
    expect(routerTableName('db-gw.1')).toBe('lattice_router_db_gw_1');
  });
});
