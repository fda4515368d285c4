import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/wg/config.js';
import { decodeKey, encodeKey, generatePrivateKey, publicKeyOf } from '../../src/wg/keys.js';
import { crypto } from './helpers.js';

const priv = generatePrivateKey(crypto);
const pub = publicKeyOf(crypto, priv);
const psk = encodeKey(crypto.randomBytes(32));

describe('keys (wg(8) format)', () => {
  it('round-trips base64 of 32 bytes and derives the public key', () => {
    expect(priv).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(encodeKey(decodeKey(priv))).toBe(priv);
    expect(pub).toBe(encodeKey(crypto.publicKey(decodeKey(priv))));
  });
  it('matches the RFC 7748 Alice key pair when given her private key', () => {
    const alice = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex').toString('base64');
    expect(Buffer.from(publicKeyOf(crypto, alice), 'base64').toString('hex')).toBe(
      '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  });
  it.each(['', 'abc', `${priv}x`, priv.replace('=', 'A'), 'A'.repeat(42) + 'B='])('rejects %s', (k) => {
    expect(() => decodeKey(k)).toThrow(/44 characters/);
  });
});

describe('wg-quick config', () => {
  it('parses a full config', () => {
    const c = parseConfig(`# comment
[Interface]
PrivateKey = ${priv}
Address = 10.9.0.1/24, fd00::1/64
ListenPort = 51820
MTU = 1380
DNS = 1.1.1.1

[Peer]
PublicKey = ${pub}
PresharedKey = ${psk}
AllowedIPs = 10.9.0.2/32, fd00::2/128 # trailing comment
Endpoint = [fd00::99]:51821
PersistentKeepalive = 25

[Peer]
PublicKey = ${encodeKey(crypto.randomBytes(32))}
AllowedIPs = 0.0.0.0/0
Endpoint = 192.0.2.1:51820
`);
    expect(c.interface.addresses).toEqual(['10.9.0.1/24', 'fd00::1/64']);
    expect(c.interface.listenPort).toBe(51820);
    expect(c.interface.mtu).toBe(1380);
    expect(c.ignored).toEqual(['DNS']);
    expect(c.peers[0].allowedIPs).toEqual(['10.9.0.2/32', 'fd00::2/128']);
    expect(c.peers[0].endpoint).toEqual({ address: 'fd00::99', port: 51821 });
    expect(encodeKey(c.peers[0].presharedKey!)).toBe(psk);
    expect(c.peers[0].persistentKeepalive).toBe(25);
    expect(c.peers[1].endpoint).toEqual({ address: '192.0.2.1', port: 51820 });
  });

  it.each([
    ['[Interface]\nPrivateKey = nope', /^line 2: PrivateKey: .*44 characters/],
    ['[Interface]\nListenPort = 70000\nPrivateKey = K', /^line 2: ListenPort must be an integer from 0 to 65535/],
    ['[Interface]\nPrivateKey = K\n[Peer]\nAllowedIPs = 10.0.0.0/99', /^line 4: AllowedIPs entry "10.0.0.0\/99"/],
    ['[Interface]\nPrivateKey = K\n[Peer]\nPublicKey = P\nEndpoint = nohost', /^line 5: Endpoint "nohost" must be host:port/],
    ['[Interface]\nPrivateKey = K\n[Peer]\nAllowedIPs = 10.0.0.0/8', /^line 3: \[Peer\] has no PublicKey/],
    ['[Interface]\nFoo = 1', /^line 2: unknown \[Interface\] key "Foo"/],
    ['[Interfaces]', /^line 1: unknown section/],
    ['PrivateKey = K', /^line 1: "PrivateKey" outside a section/],
    ['[Interface]\nAddress = 10.0.0.1/24', /^line 1: \[Interface\] has no PrivateKey/],
    ['[Peer]\nPublicKey = P', /no \[Interface\] section/],
    ['[Interface]\nPrivateKey = K\njunk', /^line 3: expected "Key = Value"/],
  ])('rejects %j', (text, re) => {
    const t = text.replaceAll('= K', `= ${priv}`).replaceAll('= P', `= ${pub}`);
    let err: unknown;
    try {
      parseConfig(t);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(re);
    expect((err as Error).message).not.toContain('\n');
  });
});

describe('wg show formatting', () => {
  it('prints wg(8)-like text without key material other than public keys', async () => {
    const { formatStatus } = await import('../../src/cli/wg-up.js');
    const now = 1_700_000_100_000;
    const text = formatStatus(
      [{
        interface: 'ltwg0', publicKey: pub, listenPort: 51820, pid: 1, updatedAt: now,
        peers: [{ publicKey: 'PEER=', endpoint: '192.0.2.1:51820', allowedIPs: ['10.0.0.2/32'], latestHandshake: now - 75_000, rxBytes: 2048, txBytes: 100, persistentKeepalive: 25 }],
        stats: {} as never,
      }],
      now,
    );
    expect(text).toContain('interface: ltwg0');
    expect(text).toContain('listening port: 51820');
    expect(text).toContain('latest handshake: 1 minute, 15 seconds ago');
    expect(text).toContain('transfer: 2.00 KiB received, 100 B sent');
    expect(text).toContain('persistent keepalive: every 25 seconds');
    expect(text).not.toContain(priv);
  });
});
