/**
 * Public API of the userspace WireGuard implementation. Internals (noise-protocol, messages, replay, ...)
 * are imported by path in tests.
 *
 * Data-plane seam: `device.sendPacket(ip)` encrypts to the peer that the destination routes to (allowed
 * IPs); `device.onPacket = (ip, peer) => ...` receives decrypted packets that passed the source check.
 * `device.attachTun(tun)` wires both to a Tun directly.
 */
export { Device, DropReason, type DeviceOptions, type DeviceStats, type PacketHandler } from './device.js';
export { Peer, type PeerConfig, type PeerStatus } from './peer.js';
export { parseConfig, ConfigError, type WgConfig, type PeerConfigEntry, type InterfaceConfig } from './config.js';
export { decodeKey, encodeKey, generatePrivateKey, publicKeyOf, KeyFormatError } from './keys.js';
export { defaultCrypto, SodiumCrypto, type Crypto } from './crypto.js';
export * as constants from './constants.js';
