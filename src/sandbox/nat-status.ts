/**
 * `sandbox start`'s NAT traversal flags and the per-sandbox status file (<state>/sandboxes/<id>/status.json).
 * Pure: flags in, options out; device/path snapshots in, a status document and table rows out.
 * The status file holds public keys and addresses only, never key material.
 */
import { UsageError } from '../errors.js';
import type { PeerStatus } from '../wg/peer.js';
import type { PathStatus } from '../nat/paths.js';
import type { Peer } from '../enroll/index.js';

export const STATUS_FILE = 'status.json';

export interface NatFlags {
  stunServers: string[];
  turnServers: string[];
  relayUrl?: string;
  relayToken?: string;
  ice: boolean;
}

const hostPort = String.raw`(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}`;
const STUN_RE = new RegExp(`^(?:stun:)?${hostPort}$`);
const TURN_RE = new RegExp(`^turn:[^:@\\s]+:[^@\\s]+@${hostPort}(?:\\?transport=(?:udp|tcp))?$`);
const RELAY_RE = new RegExp(`^tcp://${hostPort}$`);

/** Validated NAT traversal settings, or undefined when none was asked for (direct endpoints only, as before). */
export function parseNatFlags(o: { stun?: string[]; turn?: string[]; relay?: string; relayToken?: string; ice?: boolean }): NatFlags | undefined {
  const stun = o.stun ?? [];
  const turn = o.turn ?? [];
  for (const s of stun) if (!STUN_RE.test(s)) throw new UsageError(`--stun ${s} is not a STUN server; use stun:IP:PORT (a literal address), e.g. stun:192.0.2.1:3478`);
  for (const t of turn) if (!TURN_RE.test(t)) throw new UsageError(`--turn ${t.replace(/:[^:@]*@/, ':***@')} is not a TURN server; use turn:USER:PASS@IP:PORT`);
  if (o.relay !== undefined && !RELAY_RE.test(o.relay)) throw new UsageError(`--relay ${o.relay} is not a relay URL; use tcp://IP:PORT`);
  if (o.relayToken !== undefined && o.relay === undefined) throw new UsageError('--relay-token needs --relay URL');
  if (o.ice && stun.length === 0) throw new UsageError('--ice needs at least one --stun server');
  if (stun.length === 0 && turn.length === 0 && o.relay === undefined) return undefined;
  return { stunServers: stun, turnServers: turn, relayUrl: o.relay, relayToken: o.relayToken, ice: Boolean(o.ice) };
}

export interface PeerStatusEntry {
  name: string | null;
  namespace: string | null;
  publicKey: string;
  endpoint: string | null;
  /** ISO time of the latest completed handshake; null = never. */
  latestHandshake: string | null;
  rxBytes: number;
  txBytes: number;
  /** Present when NAT traversal is on and the peer is managed by it. */
  path?: { kind: string | null; via: string | null; rttMs: number | null; establishMs: number | null; switches: number };
}

export interface SandboxStatus {
  v: 1;
  id: string;
  name: string;
  agent: { namespace: string; name: string; address: string };
  updatedAt: string;
  listenPort: number;
  natTraversal: boolean;
  /** Our own candidates (host and server-reflexive addresses) when NAT traversal is on. */
  candidates?: { type: string; address: string; port: number }[];
  peers: PeerStatusEntry[];
}

export interface StatusInput {
  id: string;
  name: string;
  agent: { namespace: string; name: string; address: string };
  now: number;
  listenPort: number;
  directory: readonly Peer[];
  device: readonly PeerStatus[];
  /** conn.status(): peerId is the directory peer's name (same namespace). */
  paths?: readonly PathStatus[];
  candidates?: readonly { type: string; address: string; port: number }[];
}

/** Merge the device's peers with directory names and, when on, the NAT paths (matched by name). */
export function buildStatus(s: StatusInput): SandboxStatus {
  const byKey = new Map(s.directory.map((p) => [p.publicKey, p]));
  const byPeerId = new Map((s.paths ?? []).map((p) => [p.peerId, p]));
  const peers = s.device.map((d): PeerStatusEntry => {
    const dir = byKey.get(d.publicKey);
    const path = dir && dir.namespace === s.agent.namespace ? byPeerId.get(dir.name) : undefined;
    return {
      name: dir?.name ?? null,
      namespace: dir?.namespace ?? null,
      publicKey: d.publicKey,
      endpoint: d.endpoint,
      latestHandshake: d.latestHandshake > 0 ? new Date(d.latestHandshake).toISOString() : null,
      rxBytes: d.rxBytes,
      txBytes: d.txBytes,
      ...(s.paths ? { path: path ? { kind: path.kind, via: path.via, rttMs: path.rttMs, establishMs: path.establishMs, switches: path.switches } : { kind: null, via: null, rttMs: null, establishMs: null, switches: 0 } } : {}),
    };
  });
  // Named peers first (ours, then other namespaces), unknown keys last; stable across rewrites.
  const key = (p: PeerStatusEntry) => [p.name === null ? 2 : p.namespace === s.agent.namespace ? 0 : 1, p.namespace ?? '', p.name ?? p.publicKey].join('\0');
  peers.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  return {
    v: 1,
    id: s.id,
    name: s.name,
    agent: s.agent,
    updatedAt: new Date(s.now).toISOString(),
    listenPort: s.listenPort,
    natTraversal: s.paths !== undefined,
    ...(s.candidates ? { candidates: s.candidates.map((c) => ({ type: c.type, address: c.address, port: c.port })) } : {}),
    peers,
  };
}

function ago(iso: string | null, now: number): string {
  if (!iso) return 'never';
  const sec = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  return sec < 120 ? `${sec}s ago` : sec < 7200 ? `${Math.round(sec / 60)}m ago` : `${Math.round(sec / 3600)}h ago`;
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

const ms = (v: number | null | undefined) => (v === null || v === undefined ? '-' : `${Math.round(v)} ms`);

export type StatusRow = Record<'sandbox' | 'peer' | 'endpoint' | 'handshake' | 'rx' | 'tx' | 'path' | 'rtt' | 'established', string>;

/** One table row per peer of each sandbox (a sandbox without peers gets one row saying so). */
export function statusRows(statuses: readonly SandboxStatus[], now: number): StatusRow[] {
  const rows: StatusRow[] = [];
  for (const s of statuses) {
    const sandbox = s.name === s.id ? s.id : `${s.name} (${s.id})`;
    if (s.peers.length === 0) rows.push({ sandbox, peer: '(no peers)', endpoint: '-', handshake: '-', rx: '-', tx: '-', path: '-', rtt: '-', established: '-' });
    for (const p of s.peers) {
      const peer = p.name ? (p.namespace && p.namespace !== s.agent.namespace ? `${p.name}.${p.namespace}` : p.name) : `${p.publicKey.slice(0, 8)}...`;
      rows.push({
        sandbox,
        peer,
        endpoint: p.endpoint ?? '-',
        handshake: ago(p.latestHandshake, now),
        rx: bytes(p.rxBytes),
        tx: bytes(p.txBytes),
        path: p.path ? (p.path.kind ? `${p.path.kind}${p.path.via ? `/${p.path.via}` : ''}` : 'none') : 'direct (static)',
        rtt: ms(p.path?.rttMs),
        established: ms(p.path?.establishMs),
      });
    }
  }
  return rows;
}
