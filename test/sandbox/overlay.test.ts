/**
 * The overlay the enrollment describes reaches the pump of `sandbox start` (issue #13: DNS answers inside
 * the overlay create no allowance). overlayCidrs() turns the enrollment's plan into the pump's prefixes.
 */
import { describe, it, expect } from 'vitest';
import { overlayCidrs } from '../../src/sandbox/enrolled.js';
import { formatCidr } from '../../src/net/addr.js';
import { overlayPools, planIpam } from '../../src/controlplane/ipam.js';

describe('overlayCidrs (enrollment -> pump)', () => {
  it('takes the control plane\'s two pools when the enrollment carries them', () => {
    const overlay = overlayPools(planIpam());
    expect(overlay).toEqual({ v4: '10.77.0.0/16', v6: 'fd77::/48' });
    expect(overlayCidrs({ overlay, subnets: { v4: '10.77.3.0/24', v6: 'fd77:0:0:3::/64' } }).map(formatCidr)).toEqual(['10.77.0.0/16', 'fd77::/48']);
  });

  it('a custom pool outside the private ranges is what the pump gets', () => {
    const overlay = overlayPools(planIpam({ v4Pool: '93.184.0.0/16', v6Pool: '2001:db8:77::/48', v4SubnetPrefix: 24, v6SubnetPrefix: 64 }));
    expect(overlayCidrs({ overlay }).map(formatCidr)).toEqual(['93.184.0.0/16', '2001:db8:77::/48']);
  });

  it('falls back to the namespace subnets from an older control plane, and to nothing without either', () => {
    expect(overlayCidrs({ subnets: { v4: '10.77.3.0/24', v6: 'fd77:0:0:3::/64' } }).map(formatCidr)).toEqual(['10.77.3.0/24', 'fd77:0:0:3::/64']);
    expect(overlayCidrs({})).toEqual([]);
  });

  it('leaves out a malformed entry instead of throwing', () => {
    expect(overlayCidrs({ overlay: { v4: 'not-a-cidr', v6: 'fd77::/48' } }).map(formatCidr)).toEqual(['fd77::/48']);
  });
});
