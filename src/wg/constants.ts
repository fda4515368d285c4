/**
 * Protocol constants, named as in the WireGuard whitepaper (section 6.1) and wireguard-go's
 * device/constants.go. Times are in milliseconds.
 */

// ---- specification ----
/**
 * Deviation: the spec has RekeyAfterMessages = 2^60 and RejectAfterMessages = 2^64 - 2^13 - 1. Counters here
 * are JS numbers, exact only to 2^53, so both are scaled below that with the same ordering and margin
 * (2^52 packets at 1 Mpps is 142 years: unreachable either way). Counters read off the wire above 2^53
 * are rejected.
 */
export const RekeyAfterMessages = 2 ** 52;
export const RejectAfterMessages = Number.MAX_SAFE_INTEGER - 2 ** 13;
export const RekeyAfterTime = 120_000;
export const RekeyAttemptTime = 90_000;
export const RekeyTimeout = 5_000;
export const MaxTimerHandshakes = RekeyAttemptTime / RekeyTimeout; // 18
export const RekeyTimeoutJitterMaxMs = 334;
export const RejectAfterTime = 180_000;
export const KeepaliveTimeout = 10_000;
export const CookieRefreshTime = 120_000;
export const HandshakeInitationRate = 1_000 / 50; // at most 50 initiations per second per peer are consumed
export const PaddingMultiple = 16;

// ---- message sizes ----
export const MessageInitiationSize = 148;
export const MessageResponseSize = 92;
export const MessageCookieReplySize = 64;
export const MessageTransportHeaderSize = 16;
export const MessageTransportSize = MessageTransportHeaderSize + 16; // size of an empty transport (keepalive)
export const MessageKeepaliveSize = MessageTransportSize;
export const MessageHandshakeSize = MessageInitiationSize;
export const MessageTransportOffsetReceiver = 4;
export const MessageTransportOffsetCounter = 8;
export const MessageTransportOffsetContent = 16;

export const MessageType = {
  Initiation: 1,
  Response: 2,
  CookieReply: 3,
  Transport: 4,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

// ---- Noise ----
export const NoiseConstruction = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
export const WGIdentifier = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
export const WGLabelMAC1 = 'mac1----';
export const WGLabelCookie = 'cookie--';
export const NoisePublicKeySize = 32;
export const NoisePrivateKeySize = 32;
export const NoisePresharedKeySize = 32;
export const Blake2sSize = 32;
export const Blake2sMacSize = 16;
export const ChaChaPolyTagSize = 16;
export const XChaChaNonceSize = 24;
export const CookieSize = 16;

// ---- implementation ----
/** Packets queued per peer while a handshake is in flight (wireguard-go QueueStagedSize). */
export const QueueStagedSize = 128;
/** Under-load: handshake messages per second above which MAC2 (a cookie) is demanded. */
export const UnderLoadHandshakesPerSecond = 64;
/** Once under load, stay there this long after the last busy second (wireguard-go UnderLoadAfterTime). */
export const UnderLoadAfterTime = 1_000;
export const MaxPeers = 1 << 16;
export const DefaultMTU = 1420;
/**
 * Largest WireGuard message (wireguard-go MaxMessageSize): the largest UDP payload. Device.receive drops
 * a longer datagram (a virtual link could carry one) as invalidLength; Device.sendPacket drops an inner
 * packet longer than MaxContentSize as badInnerPacket.
 */
export const MaxMessageSize = 65535;
/** Largest inner packet that fits one transport message (wireguard-go MaxContentSize). */
export const MaxContentSize = MaxMessageSize - MessageTransportSize;
