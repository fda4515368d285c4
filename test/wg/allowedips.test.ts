import { describe, expect, it } from 'vitest';
import { AllowedIPs } from '../../src/wg/allowedips.js';
import { formatIpBytes, parseIpBytes, parsePrefix, innerAddresses } from '../../src/net/addr.js';

const ip = (s: string) => parseIpBytes(s)!;

describe('IP parsing', () => {
  it.each([
    ['10.1.2.3', '10.1.2.3'],
    ['fd00::1', 'fd00::1'],
    ['::', '::'],
    ['::ffff:1.2.3.4', '::ffff:102:304'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
  ])('%s', (s, want) => expect(formatIpBytes(ip(s))).toBe(want));
  it.each(['1.2.3', '1.2.3.256', ':::', '1::2::3', 'g::1', '10.0.0.0/33', 'fd00::/129', '10.0.0.0/x'])('rejects %s', (s) => {
    expect(s.includes('/') ? parsePrefix(s) : parseIpBytes(s)).toBeUndefined();
  });
  it('masks host bits of prefixes', () => {
    expect(formatIpBytes(parsePrefix('10.1.2.3/16')!.ip)).toBe('10.1.0.0');
  });
  it('reads inner packet addresses and refuses truncated headers', () => {
    expect(innerAddresses(new Uint8Array(19).fill(0x45))).toBeNull();
    expect(innerAddresses(new Uint8Array([0x70, ...new Array(40).fill(0)]))).toBeNull();
  });
});

describe('AllowedIPs (longest-prefix match)', () => {
  const t = new AllowedIPs<string>();
  const add = (p: string, peer: string) => t.insert(parsePrefix(p)!, peer);
  add('0.0.0.0/0', 'default');
  add('10.0.0.0/8', 'a');
  add('10.1.0.0/16', 'b');
  add('10.1.2.3/32', 'c');
  add('::/0', 'default6');
  add('fd00::/8', 'a6');
  add('fd00:1::/32', 'b6');
  it.each([
    ['10.1.2.3', 'c'],
    ['10.1.2.4', 'b'],
    ['10.2.0.1', 'a'],
    ['192.168.1.1', 'default'],
    ['fd00:1::5', 'b6'],
    ['fd99::1', 'a6'],
    ['2001:db8::1', 'default6'],
  ])('%s -> %s', (addr, want) => expect(t.lookup(ip(addr))).toBe(want));

  it('removes a peer and lists entries', () => {
    const u = new AllowedIPs<string>();
    u.insert(parsePrefix('10.0.0.0/24')!, 'x');
    u.insert(parsePrefix('10.0.0.7/32')!, 'y');
    u.insert(parsePrefix('fd00::/64')!, 'x');
    expect(u.entriesForPeer('x').sort()).toEqual(['10.0.0.0/24', 'fd00::/64']);
    u.removeByPeer('y');
    expect(u.lookup(ip('10.0.0.7'))).toBe('x');
    u.removeByPeer('x');
    expect(u.lookup(ip('10.0.0.7'))).toBeUndefined();
    expect(u.lookup(new Uint8Array(5))).toBeUndefined();
  });
  it('a prefix moves to the last peer that claims it', () => {
    const u = new AllowedIPs<string>();
    u.insert(parsePrefix('10.0.0.0/24')!, 'x');
    u.insert(parsePrefix('10.0.0.0/24')!, 'y');
    expect(u.lookup(ip('10.0.0.1'))).toBe('y');
  });
});
