import { describe, expect, it } from 'vitest';
import { routePeer } from '../support/route-peer.js';
import { formatCidr } from '../../src/net/addr.js';
import { changedRoutes, peerConfigs, unapprovedExitNode } from '../../src/sandbox/enrolled.js';

const K1 = 'A'.repeat(42) + 'A=';
const K2 = 'B'.repeat(42) + 'A=';
const peer = routePeer;

describe('launcher side of routes: peer configs and which routes changed', () => {
  it('approved routes land in the winning peer\'s AllowedIPs; exit routes only for the chosen exit node', () => {
    const router = peer('r', K1, [{ cidr: '10.200.0.0/24', approvedAt: 1 }, { cidr: '0.0.0.0/0', approvedAt: 1 }]);
    const other = peer('oo', K2);
    expect(peerConfigs([router, other]).map((c) => c.allowedIPs)).toEqual([['10.77.0.1/32', '10.200.0.0/24'], ['10.77.0.2/32']]);
    expect(peerConfigs([router, other], 'r')[0]!.allowedIPs).toEqual(['10.77.0.1/32', '10.200.0.0/24', '0.0.0.0/0']);
  });

  it('a route withdrawn or moved to another peer is reported (its open flows are cut); unchanged ones are not', () => {
    const before = peerConfigs([peer('r', K1, [{ cidr: '10.200.0.0/24', approvedAt: 1 }, { cidr: '10.9.0.0/16', approvedAt: 1 }]), peer('oo', K2, [{ cidr: '10.8.0.0/16', approvedAt: 1 }])]);
    const after = peerConfigs([peer('r', K1, [{ cidr: '10.9.0.0/16', approvedAt: 1 }]), peer('oo', K2, [{ cidr: '10.8.0.0/16', approvedAt: 1 }, { cidr: '10.200.0.0/24', approvedAt: 2 }])]);
    expect(changedRoutes(before, after).map(formatCidr)).toEqual(['10.200.0.0/24']);
    expect(changedRoutes(before, before)).toEqual([]);
    expect(changedRoutes(after, peerConfigs([peer('r', K1)])).map(formatCidr).sort()).toEqual(['10.200.0.0/24', '10.8.0.0/16', '10.9.0.0/16']);
  });

  it('--exit-node NAME must name a peer with an approved exit route: one line saying which and what to do', () => {
    const exit = peer('exit', K1, [{ cidr: '0.0.0.0/0', approvedAt: 1 }, { cidr: '::/0', approvedAt: 1 }]);
    const subnetOnly = peer('r', K2, [{ cidr: '10.200.0.0/24', approvedAt: 1 }]);
    expect(unapprovedExitNode([exit, subnetOnly], 'exit', 'team')).toBeUndefined();
    expect(unapprovedExitNode([exit, subnetOnly], `${exit.namespace}.exit`, 'team')).toBeUndefined();
    const notExit = unapprovedExitNode([exit, subnetOnly], 'r', 'team');
    expect(notExit).toContain(`exit node r has no approved exit routes; an operator approves them with lattice route approve ${subnetOnly.namespace}/r exit`);
    const missing = unapprovedExitNode([exit, subnetOnly], 'nosuch', 'team');
    expect(missing).toContain('exit node nosuch is not a peer this agent sees (namespace team');
    for (const line of [notExit, missing]) expect(line).not.toContain('\n');
  });
});
