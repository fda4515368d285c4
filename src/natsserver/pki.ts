import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { parseIpBytes } from '../net/addr.js';

/**
 * The control plane's own small PKI, built on node:crypto alone (no openssl binary, no ASN.1 library):
 *
 *   CA (self-signed, ECDSA P-256, 10 years)  ── signs ──> server certificate (ECDSA P-256, made fresh at each start,
 *                                                          SANs = the addresses and names the server is reached by)
 *
 * Certificates are X.509 v3 (RFC 5280) encoded in DER (ITU-T X.690) by the small encoder below; node's
 * X509Certificate parses and verifies them in the tests, and both OpenSSL (node's TLS client) and Go's
 * crypto/tls (nats-server) accept them. The signature is ecdsa-with-SHA256 (RFC 5758 section 3.2).
 *
 * A launcher pins the CA by `caFingerprint` = "sha256:" + hex SHA-256 of the CA certificate's DER, the way
 * `kubeadm join --discovery-token-ca-cert-hash` pins a cluster CA (kubeadm hashes the SPKI; lattice hashes
 * the whole certificate, which is what `openssl x509 -fingerprint -sha256` prints).
 *
 * Key material: private keys are PKCS#8 PEM strings here; they never reach a log.
 */

/** A certificate and its private key, both PEM. */
export interface CertKey {
  certPem: string;
  keyPem: string;
}

/** Where a server is reached: IP addresses (v4 or v6 text) and DNS names, written into subjectAltName. */
export interface ServerNames {
  ips: string[];
  dns: string[];
}

const DAY_MS = 86_400_000;
export const CA_LIFETIME_MS = 3650 * DAY_MS;
/** Server certificates are re-made at every start; 397 days is the CA/Browser Forum ceiling, kept here too. */
export const SERVER_CERT_LIFETIME_MS = 397 * DAY_MS;

// ---- DER (X.690) ----

function tlv(tag: number, body: Buffer): Buffer {
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}
const seq = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => tlv(0x31, Buffer.concat(items));
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0x00]));
const octets = (b: Buffer) => tlv(0x04, b);
const explicit = (n: number, body: Buffer) => tlv(0xa0 | n, body);
/** A non-negative INTEGER from big-endian bytes (minimal, with a 0x00 pad when the top bit is set). */
function uint(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, v[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}
/** BIT STRING with `unused` trailing bits in the last byte. */
const bits = (b: Buffer, unused = 0) => tlv(0x03, Buffer.concat([Buffer.from([unused]), b]));
function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const base128: number[] = [];
    for (let v = p; ; v = Math.floor(v / 128)) {
      base128.unshift((v % 128) | (base128.length ? 0x80 : 0));
      if (v < 128) break;
    }
    out.push(...base128);
  }
  return tlv(0x06, Buffer.from(out));
}
/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
function time(ms: number): Buffer {
  const iso = new Date(Math.floor(ms / 1000) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '');
  const year = Number(iso.slice(0, 4));
  return year < 2050 ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${digits}Z`));
}
const name = (cn: string) => seq(set(seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from(cn, 'utf8')))));
const extension = (id: string, critical: boolean, value: Buffer) => seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value (the last 65 bytes of a P-256 SPKI). */
function keyId(spkiDer: Buffer): Buffer {
  return createHash('sha1').update(spkiDer.subarray(spkiDer.length - 65)).digest();
}

/** The 4 or 16 bytes of an iPAddress SAN (RFC 5280 4.2.1.6), parsed by the project's one address module. */
function ipBytes(ip: string): Buffer {
  const b = parseIpBytes(ip);
  if (!b) throw new TypeError(`${JSON.stringify(ip)} is not an IP address`);
  return Buffer.from(b);
}

interface TbsInput {
  subject: string;
  issuer: string;
  notBefore: number;
  notAfter: number;
  spki: Buffer;
  issuerSpki: Buffer;
  extensions: Buffer[];
}

function signCertificate(t: TbsInput, issuerKey: KeyObject): string {
  const alg = seq(oid(OID.ecdsaWithSha256));
  const tbs = seq(
    explicit(0, uint(Buffer.from([2]))), // v3
    uint(Buffer.concat([Buffer.from([0x40]), randomBytes(15)])), // positive, 16 bytes, random (RFC 5280 4.1.2.2)
    alg,
    name(t.issuer),
    seq(time(t.notBefore), time(t.notAfter)),
    name(t.subject),
    t.spki,
    explicit(3, seq(
      ...t.extensions,
      extension(OID.subjectKeyId, false, octets(keyId(t.spki))),
      extension(OID.authorityKeyId, false, seq(tlv(0x80, keyId(t.issuerSpki)))),
    )),
  );
  const signature = sign('sha256', tbs, { key: issuerKey, dsaEncoding: 'der' });
  const der = seq(tbs, alg, bits(signature));
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;
}

function p256(): { spki: Buffer; key: KeyObject; keyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { spki: publicKey.export({ type: 'spki', format: 'der' }), key: privateKey, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

/** A new self-signed CA (basicConstraints CA, pathLen 0; keyUsage keyCertSign + cRLSign). `now`: epoch ms. */
export function createCa(commonName: string, now: number): CertKey {
  const k = p256();
  const certPem = signCertificate(
    {
      subject: commonName,
      issuer: commonName,
      notBefore: now - 60_000,
      notAfter: now + CA_LIFETIME_MS,
      spki: k.spki,
      issuerSpki: k.spki,
      extensions: [
        extension(OID.basicConstraints, true, seq(bool(true), uint(Buffer.from([0])))),
        extension(OID.keyUsage, true, bits(Buffer.from([0x06]), 1)), // keyCertSign(5), cRLSign(6)
      ],
    },
    k.key,
  );
  return { certPem, keyPem: k.keyPem };
}

/** A server certificate signed by `ca` for `names` (serverAuth; keyUsage digitalSignature). `now`: epoch ms. */
export function issueServerCert(ca: CertKey, names: ServerNames, now: number, commonName = 'lattice control plane'): CertKey {
  if (names.ips.length + names.dns.length === 0) throw new TypeError('a server certificate needs at least one IP address or DNS name');
  const caCert = new X509Certificate(ca.certPem);
  const issuerSpki = caCert.publicKey.export({ type: 'spki', format: 'der' });
  const k = p256();
  const san = seq(...names.dns.map((d) => tlv(0x82, Buffer.from(d, 'ascii'))), ...names.ips.map((ip) => tlv(0x87, ipBytes(ip))));
  const certPem = signCertificate(
    {
      subject: commonName,
      issuer: caCert.subject.replace(/^CN=/, ''),
      notBefore: now - 60_000,
      notAfter: Math.min(now + SERVER_CERT_LIFETIME_MS, Date.parse(caCert.validTo)),
      spki: k.spki,
      issuerSpki,
      extensions: [
        extension(OID.basicConstraints, true, seq()),
        extension(OID.keyUsage, true, bits(Buffer.from([0x80]), 7)), // digitalSignature(0)
        extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
        extension(OID.subjectAltName, false, san),
      ],
    },
    createPrivateKey(ca.keyPem),
  );
  return { certPem, keyPem: k.keyPem };
}

/** "sha256:<64 hex>" of a certificate's DER: what a join token pins. */
export function caFingerprint(certPemOrDer: string | Buffer): string {
  const der = typeof certPemOrDer === 'string' ? new X509Certificate(certPemOrDer).raw : certPemOrDer;
  return `sha256:${createHash('sha256').update(der).digest('hex')}`;
}

/** True when `ca.keyPem` is the private key of `ca.certPem` (a damaged or mixed-up pair is refused at start). */
export function caKeyMatches(ca: CertKey): boolean {
  try {
    const fromKey = createPublicKey(createPrivateKey(ca.keyPem)).export({ type: 'spki', format: 'der' });
    return Buffer.compare(fromKey, new X509Certificate(ca.certPem).publicKey.export({ type: 'spki', format: 'der' })) === 0;
  } catch {
    return false;
  }
}
