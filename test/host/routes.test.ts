import { describe, it, expect } from 'vitest';
import { hostRoutes } from '../../src/host/routes.js';
import type { Peer } from '../../src/controlplane/types.js';

const peer = (name: string, n: number, routes: string[], endpoint = `198.18.0.${n}:51820`): Peer => ({
  name,
  namespace: 'ns',
  publicKey: `key-${name}`,
  allowedIPs: [`10.77.0.${n}/32`, `fd77::${n}/128`],
  endpoint,
  routes: routes.map((cidr) => ({ cidr, approvedAt: n })),
});

describe('hostRoutes: approved routes of other peers as kernel routes of a host', () => {
  it('routes every approved route another peer wins, never the peers\u2019 own addresses', () => {
    const r = hostRoutes({ peers: [peer('r', 21, ['10.200.0.0/24']), peer('q', 22, ['10.0.0.0/8', '2001:db8::/32']), peer('plain', 23, [])], advertised: [], local: ['198.18.0.22/24'] });
    expect(r.routes).toEqual(['10.0.0.0/8', '10.200.0.0/24', '2001:db8::/32']);
    expect(r.skipped).toEqual([]);
  });
  it('leaves out its own advertised routes and what lies inside them, but keeps a wider one of another peer', () => {
    const r = hostRoutes({ peers: [peer('r', 21, ['10.200.0.0/24', '10.200.0.128/25', '10.0.0.0/8'])], advertised: ['10.200.0.0/24'], local: [] });
    expect(r.routes).toEqual(['10.0.0.0/8']);
    expect(r.skipped).toEqual([{ cidr: '10.200.0.0/24', why: 'own' }, { cidr: '10.200.0.128/25', why: 'own' }]);
  });
  it('leaves out a route inside a connected network and one holding a peer endpoint; exit routes never', () => {
    const r = hostRoutes({
      peers: [peer('r', 21, ['192.168.1.0/24', '192.168.0.0/16', '198.18.0.0/16', '0.0.0.0/0', '::/0'])],
      advertised: [],
      local: ['192.168.1.7/24', '127.0.0.1/8'],
    });
    // A wider route than the LAN is kept: the connected /24 is the longer prefix for the LAN itself.
    expect(r.routes).toEqual(['192.168.0.0/16']);
    expect(r.skipped).toEqual([{ cidr: '192.168.1.0/24', why: 'local' }, { cidr: '198.18.0.0/16', why: 'endpoint' }]);
  });
  it('follows the directory: a tie goes to the older approval only, a route gone is gone', () => {
    const a = peer('a', 21, ['10.200.0.0/24']);
    const b = peer('b', 22, ['10.200.0.0/24']);
    expect(hostRoutes({ peers: [a, b], advertised: [], local: [] }).routes).toEqual(['10.200.0.0/24']);
    expect(hostRoutes({ peers: [peer('a', 21, []), b], advertised: [], local: [] }).routes).toEqual(['10.200.0.0/24']);
    expect(hostRoutes({ peers: [peer('a', 21, []), peer('b', 22, [])], advertised: [], local: [] }).routes).toEqual([]);
  });
  it('reads IPv6 endpoints in brackets', () => {
    const r = hostRoutes({ peers: [peer('r', 21, ['2001:db8::/32'], '[2001:db8::9]:51820')], advertised: [], local: [] });
    expect(r.skipped).toEqual([{ cidr: '2001:db8::/32', why: 'endpoint' }]);
  });
});
