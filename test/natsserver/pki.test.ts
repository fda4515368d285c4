import { X509Certificate } from 'node:crypto';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { caFingerprint, caKeyMatches, createCa, issueServerCert } from '../../src/natsserver/pki.js';

const NOW = Date.UTC(2026, 10, 29);

/** A real TLS handshake (node's OpenSSL) to a server holding `cert`, trusting `caPem`, naming `host`. */
async function handshake(server: { certPem: string; keyPem: string }, caPem: string, host: string): Promise<string> {
  const srv = createServer({ cert: server.certPem, key: server.keyPem }, (s) => s.end());
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  try {
    return await new Promise<string>((resolve) => {
      const s: TLSSocket = connect({ host: '127.0.0.1', port, ca: caPem, servername: host.match(/^[\d.:]+$/) ? undefined : host }, () => {
        s.destroy();
        resolve('ok');
      });
      s.once('error', (err) => resolve((err as NodeJS.ErrnoException).code ?? err.message));
    });
  } finally {
    srv.close();
  }
}

describe('the control plane PKI (node:crypto, DER by hand)', () => {
  const ca = createCa('lattice test CA', NOW);
  const server = issueServerCert(ca, { ips: ['127.0.0.1', '10.0.0.1', '::1', 'fd00::1:2'], dns: ['localhost', 'cp.example'] }, NOW);

  it('makes a CA node parses as a CA, self-signed, with its key', () => {
    const c = new X509Certificate(ca.certPem);
    expect(c.ca).toBe(true);
    expect(c.subject).toBe('CN=lattice test CA');
    expect(c.checkIssued(c)).toBe(true);
    expect(c.verify(c.publicKey)).toBe(true);
    expect(caKeyMatches(ca)).toBe(true);
    expect(caKeyMatches({ certPem: ca.certPem, keyPem: createCa('other', NOW).keyPem })).toBe(false);
    expect(Date.parse(c.validFrom)).toBeLessThanOrEqual(NOW);
    expect(Date.parse(c.validTo)).toBeGreaterThan(NOW + 3000 * 86_400_000);
  });

  it('issues a server certificate signed by the CA with the given names', () => {
    const c = new X509Certificate(server.certPem);
    const cac = new X509Certificate(ca.certPem);
    expect(c.ca).toBe(false);
    expect(c.checkIssued(cac)).toBe(true);
    expect(c.verify(cac.publicKey)).toBe(true);
    expect(c.checkIP('10.0.0.1')).toBe('10.0.0.1');
    expect(c.checkIP('fd00::1:2')).toBe('fd00::1:2');
    expect(c.checkIP('10.0.0.2')).toBeUndefined();
    expect(c.checkHost('cp.example')).toBe('cp.example');
    expect(c.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
  });

  it('passes a real TLS handshake against the pinned CA, and fails against another CA or name', async () => {
    expect(await handshake(server, ca.certPem, '127.0.0.1')).toBe('ok');
    expect(await handshake(server, ca.certPem, 'cp.example')).toBe('ok');
    expect(await handshake(server, createCa('another', NOW).certPem, '127.0.0.1')).toMatch(/UNABLE_TO_VERIFY|SELF_SIGNED|unable/i);
    expect(await handshake(server, ca.certPem, 'evil.example')).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('fingerprints the CA as sha256 of its DER', () => {
    const fp = caFingerprint(ca.certPem);
    expect(fp).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(fp).toBe(`sha256:${new X509Certificate(ca.certPem).fingerprint256.replace(/:/g, '').toLowerCase()}`);
    expect(caFingerprint(createCa('lattice test CA', NOW).certPem)).not.toBe(fp);
  });

  it('uses GeneralizedTime from 2050 (RFC 5280 4.1.2.5)', () => {
    const late = createCa('late', Date.UTC(2045, 0, 1));
    expect(new Date(Date.parse(new X509Certificate(late.certPem).validTo)).getUTCFullYear()).toBe(2054);
  });
});
