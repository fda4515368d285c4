import { describe, expect, it } from 'vitest';
import type { NetworkInterfaceInfo } from 'node:os';
import { isLoopbackHost, isWildcardHost, reachableAddresses, serverNamesFor } from '../../src/natsserver/tls.js';
import { encodeJoinToken, parseJoinToken } from '../../src/controlplane/join.js';
import { splitUrls } from '../../src/enroll/client.js';
import { controlPlaneEndpoint, type Credentials } from '../../src/enroll/credentials.js';
import { natsHostPort } from '../../src/enroll/pin.js';

const iface = (address: string, family: 'IPv4' | 'IPv6', internal = false) => ({ address, family, internal }) as NetworkInterfaceInfo;
const IFACES = {
  lo: [iface('127.0.0.1', 'IPv4', true), iface('::1', 'IPv6', true)],
  eth0: [iface('192.0.2.7', 'IPv4'), iface('2001:db8::7', 'IPv6'), iface('fe80::1', 'IPv6')],
};

describe('where TLS is on and what the certificate names', () => {
  it('tells loopback from the rest', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', 'localhost']) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'cp.example', '::ffff:127.0.0.1']) expect(isLoopbackHost(h)).toBe(false);
    expect(isWildcardHost('0.0.0.0') && isWildcardHost('::')).toBe(true);
  });
  it('a wildcard listener is reached at every non-loopback address (IPv4 only for 0.0.0.0, no link-local)', () => {
    expect(reachableAddresses('0.0.0.0', IFACES)).toEqual(['192.0.2.7']);
    expect(reachableAddresses('::', IFACES)).toEqual(['192.0.2.7', '2001:db8::7']);
    expect(reachableAddresses('10.9.0.1', IFACES)).toEqual(['10.9.0.1']);
  });
  it('the server certificate names those addresses, loopback and localhost', () => {
    const n = serverNamesFor('0.0.0.0', IFACES);
    expect(n.ips).toEqual(['192.0.2.7', '127.0.0.1', '::1']);
    expect(n.dns).toContain('localhost');
    expect(serverNamesFor('cp.example', IFACES).dns).toContain('cp.example');
  });
});

describe('control-plane URLs a launcher keeps', () => {
  it('the join token carries URLs and the CA pin, and refuses damaged ones', () => {
    const ca = `sha256:${'ab'.repeat(32)}`;
    const t = encodeJoinToken({ token: 'x'.repeat(43), ca, urls: ['nats://10.0.0.1:4222', 'nats://[fd00::1]:4222'] });
    expect(parseJoinToken(t)).toEqual({ token: 'x'.repeat(43), ca, urls: ['nats://10.0.0.1:4222', 'nats://[fd00::1]:4222'] });
    expect(() => parseJoinToken(encodeJoinToken({ token: 't', urls: ['nats://a:1,nats://b:2'] }))).toThrow(/URLs are damaged/);
    expect(() => parseJoinToken(encodeJoinToken({ token: 't', urls: ['http://a:1'] }))).toThrow(/URLs are damaged/);
    expect(() => parseJoinToken(encodeJoinToken({ token: 't', ca: 'sha256:zz' }))).toThrow(/CA pin/);
  });
  it('a comma-separated list is a list: every URL, trimmed, once', () => {
    expect(splitUrls('nats://a:4222, nats://b:4222,,nats://a:4222')).toEqual(['nats://a:4222', 'nats://b:4222']);
    expect(splitUrls(['nats://a:1,nats://b:2', 'nats://c:3'])).toEqual(['nats://a:1', 'nats://b:2', 'nats://c:3']);
  });
  it('stored credentials keep every URL; URLs given now come first; old files with one url still work', () => {
    const c = { controlPlane: { url: 'nats://a:1', urls: ['nats://a:1', 'nats://b:2'], caPem: 'PEM', clusterId: 'c', issuer: 'i' } } as Credentials;
    expect(controlPlaneEndpoint(c, 'nats://z:9,nats://b:2')).toEqual({ urls: ['nats://z:9', 'nats://b:2', 'nats://a:1'], user: undefined, caPem: 'PEM' });
    const old = { controlPlane: { url: 'nats://a:1', clusterId: 'c', issuer: 'i' } } as Credentials;
    expect(controlPlaneEndpoint(old).urls).toEqual(['nats://a:1']);
  });
  it('host and port of a NATS URL', () => {
    expect(natsHostPort('nats://[fd00::1]:4333')).toEqual({ host: 'fd00::1', port: 4333 });
    expect(natsHostPort('10.0.0.1')).toEqual({ host: '10.0.0.1', port: 4222 });
  });
});
