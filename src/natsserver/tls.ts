import { readFile } from 'node:fs/promises';
import { hostname, networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { LatticeError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { formatIp, parseIp } from '../net/addr.js';
import { caFingerprint, caKeyMatches, createCa, issueServerCert, type CertKey, type ServerNames } from './pki.js';

/**
 * The control plane's TLS material on disk, in <dir> (the control plane's `tls/`, 0700):
 *
 *   ca.pem      the CA certificate (public; launchers pin its SHA-256)
 *   ca.key      the CA private key, 0600, written atomically; made once, kept across restarts
 *   server.pem  server certificate followed by the CA certificate (the chain nats-server and the HTTP API send)
 *   server.key  its private key, 0600; both re-made at every start for the addresses of that start
 *
 * Sending the CA in the chain lets a launcher that holds only the pin (from its join token) find the CA
 * certificate in the handshake, check its hash, and from then on verify normally against it
 * (enroll/pin.ts). Private keys never reach a log.
 */
export interface ControlPlaneTls {
  /** CA certificate, PEM: what clients trust. */
  caPem: string;
  /** "sha256:<hex>" of the CA's DER: what a join token carries. */
  caHash: string;
  /** server.pem (leaf + CA) and server.key paths, for nats-server's tls block and the HTTP API. */
  certFile: string;
  keyFile: string;
  /** The same, in memory (the HTTP API's TLS server). */
  certPem: string;
  keyPem: string;
}

export class TlsSetupError extends LatticeError {
  override readonly name = 'TlsSetupError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ETLS_SETUP', message, options);
  }
}

/** Load the CA from `dir` or make one (first start), then issue this start's server certificate for `names`. */
export async function prepareServerTls(dir: string, names: ServerNames, now: number): Promise<ControlPlaneTls> {
  const ca = await loadOrCreateCa(dir, now);
  const server = issueServerCert(ca, names, now);
  const certFile = join(dir, 'server.pem');
  const keyFile = join(dir, 'server.key');
  await writeFileAtomic(keyFile, server.keyPem, 0o600);
  await writeFileAtomic(certFile, server.certPem + ca.certPem, 0o600);
  return { caPem: ca.certPem, caHash: caFingerprint(ca.certPem), certFile, keyFile, certPem: server.certPem + ca.certPem, keyPem: server.keyPem };
}

async function loadOrCreateCa(dir: string, now: number): Promise<CertKey> {
  const certPath = join(dir, 'ca.pem');
  const keyPath = join(dir, 'ca.key');
  let cert: string | undefined;
  let key: string | undefined;
  try {
    [cert, key] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new TlsSetupError(`cannot read the control plane's CA in ${dir}: ${(err as Error).message}`, { cause: err });
  }
  if (cert !== undefined && key !== undefined) {
    if (!caKeyMatches({ certPem: cert, keyPem: key })) {
      throw new TlsSetupError(`${certPath} and ${keyPath} do not belong together; restore both from a backup (a new CA would break every join token and enrolled launcher)`);
    }
    return { certPem: cert, keyPem: key };
  }
  const ca = createCa(`lattice control plane CA ${hostname()}`, now);
  // Key first: a crash between the two writes leaves a key without a certificate, which the next start replaces.
  await writeFileAtomic(keyPath, ca.keyPem, 0o600);
  await writeFileAtomic(certPath, ca.certPem, 0o644);
  return ca;
}

/** True for 127.0.0.0/8, ::1 and "localhost": a listener there needs no TLS. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const a = parseIp(host);
  if (!a) return false;
  return a.family === 6 ? formatIp(a) === '::1' : formatIp(a).startsWith('127.');
}

/** True for 0.0.0.0 and ::, which listen on every interface. */
export function isWildcardHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]';
}

/**
 * Where a server listening on `host` is reached from other hosts: the address itself, or for a wildcard
 * every non-loopback interface address (IPv4 first). The server certificate names these, loopback and
 * this host's name; the join token lists them as URLs.
 */
export function reachableAddresses(host: string, ifaces = networkInterfaces()): string[] {
  if (!isWildcardHost(host)) return [host];
  const v4: string[] = [];
  const v6: string[] = [];
  for (const list of Object.values(ifaces)) {
    for (const a of list ?? []) {
      if (a.internal) continue;
      if (a.family === 'IPv4') v4.push(a.address);
      else if (host !== '0.0.0.0' && !a.address.startsWith('fe80:')) v6.push(a.address);
    }
  }
  return [...v4, ...v6];
}

/** subjectAltName for a server listening on `host`: its reachable addresses, loopback, localhost and the host name. */
export function serverNamesFor(host: string, ifaces = networkInterfaces()): ServerNames {
  const ips = [...new Set([...reachableAddresses(host, ifaces).filter((a) => parseIp(a)), '127.0.0.1', '::1'])];
  const dns = [...new Set(['localhost', hostname(), ...(parseIp(host) || isWildcardHost(host) ? [] : [host])])].filter((d) => /^[A-Za-z0-9.-]+$/.test(d));
  return { ips, dns };
}
