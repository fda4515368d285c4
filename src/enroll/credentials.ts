import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { LatticeError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { statePaths } from '../state.js';
import { assertPrivate } from '../controlplane/secrets.js';
import { isLabel, isWgKey, type Modes, type Peer } from '../controlplane/types.js';
import { splitUrls, type ControlPlaneEndpoint } from './client.js';

/**
 * The enrolled identity of one sandbox, kept so that a restart reuses it (same key, same address) and
 * needs no token. One JSON file per sandbox name, <stateDir>/credentials/<name>.json, mode 0600,
 * written atomically (temp file, fsync, rename, fsync dir), so a crash leaves the old file or the new one.
 */
export interface Credentials {
  version: 1;
  name: string;
  namespace: string;
  agentId: string;
  /** WireGuard private key, base64. Never logged. */
  privateKey: string;
  publicKey: string;
  address: { ipv4: string; ipv6: string };
  subnets?: { v4: string; v6: string };
  /** The overlay's pools from the enrollment (EnrollResponse.overlay). */
  overlay?: { v4: string; v6: string };
  jwt: string;
  jwtExpiresAt: number;
  allowedTools: string[];
  allowedNamespaces: string[];
  modes: Modes;
  policy?: unknown;
  peers?: Peer[];
  /**
   * How to reach the control plane: `url` is the first of `urls` (older files hold only `url`); `urls`
   * every NATS URL learned (join token, --control-plane, the servers' INFO); `caPem` the CA pinned at
   * enrollment when the control plane speaks TLS (every later connection is verified against it).
   */
  controlPlane: { url: string; urls?: string[]; caPem?: string; clusterId: string; issuer: string };
  /** This launcher's NATS user (operator mode); absent for a control plane without NATS auth. Seed never logged. */
  nats?: { jwt: string; seed: string; inboxPrefix: string };
  enrolledAt: number;
}

/** A sandbox name is not a DNS label, or a stored credentials file is not valid JSON or is incomplete (code ECREDENTIALS). */
export class CredentialsError extends LatticeError {
  override readonly name = 'CredentialsError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ECREDENTIALS', message, options);
  }
}

/** The stored way to the control plane; URLs given now (--control-plane) come first, the stored ones after. */
export function controlPlaneEndpoint(c: Credentials, given?: string | string[]): ControlPlaneEndpoint {
  const stored = c.controlPlane.urls ?? [c.controlPlane.url];
  return { urls: splitUrls([...(given === undefined ? [] : typeof given === 'string' ? [given] : given), ...stored]), user: c.nats, caPem: c.controlPlane.caPem };
}

/** `<stateDir>/credentials/<name>.json`. @throws CredentialsError when `name` is not a DNS label. */
export function credentialsPath(stateDir: string, name: string): string {
  if (!isLabel(name)) throw new CredentialsError(`bad sandbox name ${JSON.stringify(name)}: use a DNS label`);
  return join(statePaths(stateDir).credentials, `${name}.json`);
}

/** Write `c` atomically with mode 0600; returns the path. @throws CredentialsError when the directory is not private. */
export async function saveCredentials(stateDir: string, c: Credentials): Promise<string> {
  const path = credentialsPath(stateDir, c.name);
  await writeFileAtomic(path, `${JSON.stringify(c, null, 2)}\n`, 0o600);
  await assertPrivate(statePaths(stateDir).credentials);
  return path;
}

/** The stored identity, or null when none. Refuses files other users could read, and damaged ones. */
export async function loadCredentials(stateDir: string, name: string): Promise<Credentials | null> {
  const path = credentialsPath(stateDir, name);
  let text: string;
  try {
    await assertPrivate(path);
    await assertPrivate(statePaths(stateDir).credentials);
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  let c: Partial<Credentials>;
  try {
    c = JSON.parse(text) as Partial<Credentials>;
  } catch (err) {
    throw new CredentialsError(`${path} is not valid JSON; delete it and enroll again with a new token`, { cause: err });
  }
  if (c.version !== 1 || c.name !== name || !isWgKey(c.publicKey) || typeof c.privateKey !== 'string' || typeof c.jwt !== 'string' || !c.address?.ipv4) {
    throw new CredentialsError(`${path} is incomplete or from another version; delete it and enroll again with a new token`);
  }
  return c as Credentials;
}

/** Remove a sandbox's stored credentials; false when there were none. */
export async function deleteCredentials(stateDir: string, name: string): Promise<boolean> {
  try {
    await unlink(credentialsPath(stateDir, name));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
