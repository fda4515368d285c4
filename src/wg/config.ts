/**
 * wg-quick style configuration ([Interface] + [Peer] sections). Errors are one line naming the line
 * number and the fix. DNS, Table, PreUp/PostUp and other wg-quick-only keys are accepted and ignored
 * (listed in `ignored`), since this peer does not run shell hooks or touch resolv.conf.
 */
import { decodeKey, KeyFormatError } from './keys.js';
import { formatCidr, formatPrefix, parseCidr, parseEndpointAddress, parsePrefix } from '../net/addr.js';
import type { Endpoint } from '../conn/bind.js';

export class ConfigError extends Error {
  readonly code = 'EWG_CONFIG';
  override readonly name = 'ConfigError';
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(line > 0 ? `line ${line}: ${message}` : message);
  }
}

export interface InterfaceConfig {
  privateKey: Uint8Array;
  /** Interface addresses with prefix length, e.g. "10.9.0.1/24". */
  addresses: string[];
  listenPort?: number;
  mtu?: number;
}

export interface PeerConfigEntry {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  allowedIPs: string[];
  endpoint?: Endpoint;
  /** Hostname endpoints are kept as text for the caller to resolve. */
  endpointHost?: string;
  persistentKeepalive?: number;
}

export interface WgConfig {
  interface: InterfaceConfig;
  peers: PeerConfigEntry[];
  ignored: string[];
}

const IGNORED = new Set(['dns', 'table', 'preup', 'postup', 'predown', 'postdown', 'saveconfig', 'fwmark']);

export function parseEndpoint(s: string): { endpoint?: Endpoint; host?: string; port: number } | null {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:]+):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  // The one place a zone id is taken: a link-local peer needs the interface (fe80::1%eth0).
  if (parseEndpointAddress(m[1])) return { endpoint: { address: m[1], port }, port };
  // A name never has the dotted-decimal form (RFC 1123 2.1): "010.0.0.1" is a refused address, not a
  // host name for the resolver to read as octal.
  if (!/^[A-Za-z0-9.-]+$/.test(m[1]) || /^[0-9.]+$/.test(m[1])) return null;
  return { host: m[1], port };
}

export function parseConfig(text: string): WgConfig {
  let section: 'interface' | 'peer' | undefined;
  let privateKey: Uint8Array | undefined;
  let interfaceLine = 0;
  const iface: Omit<InterfaceConfig, 'privateKey'> = { addresses: [] };
  const peers: (PeerConfigEntry & { line: number; hasKey: boolean })[] = [];
  const ignored: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const raw = lines[i].replace(/#.*$/, '').trim();
    if (raw === '') continue;
    const sec = /^\[(\w+)\]$/.exec(raw);
    if (sec) {
      const name = sec[1].toLowerCase();
      if (name === 'interface') {
        if (interfaceLine) throw new ConfigError(n, 'a second [Interface] section; keep exactly one');
        section = 'interface';
        interfaceLine = n;
      } else if (name === 'peer') {
        section = 'peer';
        peers.push({ publicKey: new Uint8Array(32), allowedIPs: [], line: n, hasKey: false });
      } else {
        throw new ConfigError(n, `unknown section [${sec[1]}]; use [Interface] or [Peer]`);
      }
      continue;
    }
    const eq = raw.indexOf('=');
    if (eq < 0) throw new ConfigError(n, `expected "Key = Value" or a [Section], got "${raw.slice(0, 40)}"`);
    const key = raw.slice(0, eq).trim();
    const value = raw.slice(eq + 1).trim();
    const k = key.toLowerCase();
    if (!section) throw new ConfigError(n, `"${key}" outside a section; put it under [Interface] or [Peer]`);
    const keyOf = (what: string): Uint8Array => {
      try {
        return decodeKey(value);
      } catch (err) {
        if (err instanceof KeyFormatError) throw new ConfigError(n, `${what}: ${err.message}`);
        throw err;
      }
    };
    const list = () => value.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const int = (what: string, min: number, max: number): number => {
      if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
        throw new ConfigError(n, `${what} must be an integer from ${min} to ${max}, got "${value}"`);
      }
      return Number(value);
    };
    if (section === 'interface') {
      switch (k) {
        case 'privatekey':
          privateKey = keyOf('PrivateKey');
          break;
        case 'address':
          for (const a of list()) {
            const p = parseCidr(a, { hostBits: 'keep' });
            if (!p.ok) throw new ConfigError(n, `Address "${a}" is not an IP address with optional /prefix (e.g. 10.9.0.1/24)`);
            iface.addresses.push(formatCidr(p.cidr));
          }
          break;
        case 'listenport':
          iface.listenPort = int('ListenPort', 0, 65535);
          break;
        case 'mtu':
          iface.mtu = int('MTU', 576, 65535);
          break;
        default:
          if (IGNORED.has(k)) ignored.push(key);
          else throw new ConfigError(n, `unknown [Interface] key "${key}"; known: PrivateKey, Address, ListenPort, MTU, DNS`);
      }
    } else {
      const peer = peers[peers.length - 1];
      switch (k) {
        case 'publickey':
          peer.publicKey = keyOf('PublicKey');
          peer.hasKey = true;
          break;
        case 'presharedkey':
          peer.presharedKey = keyOf('PresharedKey');
          break;
        case 'allowedips':
          for (const a of list()) {
            const p = parsePrefix(a);
            if (!p) throw new ConfigError(n, `AllowedIPs entry "${a}" is not a CIDR prefix (e.g. 10.9.0.0/24 or fd00::/64)`);
            peer.allowedIPs.push(formatPrefix(p));
          }
          break;
        case 'endpoint': {
          const e = parseEndpoint(value);
          if (!e) throw new ConfigError(n, `Endpoint "${value}" must be host:port or [ipv6]:port`);
          peer.endpoint = e.endpoint;
          peer.endpointHost = e.host ? `${e.host}:${e.port}` : undefined;
          break;
        }
        case 'persistentkeepalive':
          peer.persistentKeepalive = value === 'off' ? 0 : int('PersistentKeepalive', 0, 65535);
          break;
        default:
          throw new ConfigError(n, `unknown [Peer] key "${key}"; known: PublicKey, PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive`);
      }
    }
  }
  if (!interfaceLine) throw new ConfigError(0, 'no [Interface] section; add one with PrivateKey = <output of `lattice wg genkey`>');
  if (!privateKey) throw new ConfigError(interfaceLine, '[Interface] has no PrivateKey; add PrivateKey = <output of `lattice wg genkey`>');
  const seen = new Set<string>();
  for (const p of peers) {
    if (!p.hasKey) throw new ConfigError(p.line, '[Peer] has no PublicKey; add PublicKey = <the peer\'s `wg pubkey`>');
    const b64 = Buffer.from(p.publicKey).toString('base64');
    if (seen.has(b64)) throw new ConfigError(p.line, 'the same PublicKey appears in two [Peer] sections; merge them');
    seen.add(b64);
  }
  return {
    interface: { privateKey, ...iface },
    peers: peers.map(({ line: _l, hasKey: _h, ...rest }) => rest),
    ignored,
  };
}
