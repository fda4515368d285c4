/** Why the device dropped a datagram or packet: the keys of DeviceStats.dropped. Never thrown. */
import { ConsumeError } from './noise-protocol.js';

export const DropReason = {
  InvalidHeader: 'invalidHeader', // reserved bytes set or shorter than a header
  UnknownType: 'unknownType',
  InvalidLength: 'invalidLength',
  BadMAC1: 'badMac1',
  CookieRequired: 'cookieRequired', // under load without a valid MAC2: answered with a cookie reply
  RateLimited: 'rateLimited',
  CookieBudget: 'cookieBudget', // under load without a valid MAC2, and no cookie reply to spare (see HandshakeGuard)
  HandshakeBudget: 'handshakeBudget', // the global budget for Noise (DH) work this second is spent
  // a handshake message that failed to consume (see noise-protocol.ts)
  ...ConsumeError,
  UnknownIndex: 'unknownIndex',
  BadCookieReply: 'badCookieReply',
  ExpiredKeypair: 'expiredKeypair',
  CounterLimit: 'counterLimit',
  Decrypt: 'decrypt',
  Replay: 'replay',
  BadInnerPacket: 'badInnerPacket',
  DisallowedSource: 'disallowedSource',
  // outbound
  NoRoute: 'noRoute',
  NoEndpoint: 'noEndpoint',
  StagedOverflow: 'stagedOverflow',
  HandshakeGaveUp: 'handshakeGaveUp',
  Closed: 'closed',
  /** A bug or an I/O edge that threw while handling a datagram: the datagram is dropped, the device lives on. */
  InternalError: 'internalError',
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];
