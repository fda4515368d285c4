/**
 * Public API of the userspace WireGuard implementation. Internals (noise-protocol, messages, replay, ...)
 * are imported by path in tests.
 *
 * Data-plane seam: `device.sendPacket(ip)` encrypts to the peer that the destination routes to (allowed
 * IPs); decrypted packets that passed the source check go to the one sink given to the device: `tun` or
 * `onPacket` in its options, or `device.attach((ip, peer) => ...)` once (a second sink throws
 * DeviceWiringError). Timers fire from `device.tick()`, called by the `ticker` option or the test.
 */
export { Device, DeviceWiringError, DropReason, type DeviceOptions, type DeviceStats, type PacketHandler } from './device.js';
export { Peer, type PeerConfig, type PeerStatus } from './peer.js';
export { parseConfig, ConfigError, type WgConfig, type PeerConfigEntry, type InterfaceConfig } from './config.js';
export { decodeKey, encodeKey, generatePrivateKey, publicKeyOf, KeyFormatError } from './keys.js';
export { defaultCrypto, SodiumCrypto, type Crypto } from './crypto.js';
export * as constants from './constants.js';
