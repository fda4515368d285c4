/**
 * Wire formats (whitepaper section 5.4). All integers little-endian; the first byte is the type and the
 * next three are reserved and must be zero. unmarshal* returns null for anything malformed: the caller
 * drops and counts it.
 */
import {
  MessageCookieReplySize,
  MessageInitiationSize,
  MessageResponseSize,
  MessageTransportHeaderSize,
  MessageTransportOffsetCounter,
  MessageTransportOffsetReceiver,
  MessageTransportSize,
  MessageType,
} from './constants.js';

export interface MessageInitiation {
  sender: number;
  ephemeral: Uint8Array; // 32
  static: Uint8Array; // 32 + 16
  timestamp: Uint8Array; // 12 + 16
  mac1: Uint8Array; // 16
  mac2: Uint8Array; // 16
}

export interface MessageResponse {
  sender: number;
  receiver: number;
  ephemeral: Uint8Array; // 32
  empty: Uint8Array; // 16
  mac1: Uint8Array;
  mac2: Uint8Array;
}

export interface MessageCookieReply {
  receiver: number;
  nonce: Uint8Array; // 24
  cookie: Uint8Array; // 16 + 16
}

/** Offsets of MAC1 and MAC2 in the handshake messages: MACs cover everything before them. */
export const InitiationMac1Offset = MessageInitiationSize - 32;
export const InitiationMac2Offset = MessageInitiationSize - 16;
export const ResponseMac1Offset = MessageResponseSize - 32;
export const ResponseMac2Offset = MessageResponseSize - 16;

function u32(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}
function putU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}
export { u32 as readU32LE, putU32 as writeU32LE };

/** The type of a datagram, or 0 if its header is not a valid WireGuard header (reserved bytes set, too short). */
export function messageType(b: Uint8Array): number {
  if (b.length < 4) return 0;
  if (b[1] !== 0 || b[2] !== 0 || b[3] !== 0) return 0;
  return b[0];
}

/** The exact size a message of this type must have (transport: the minimum). */
export function expectedSize(type: number): { size: number; exact: boolean } | null {
  switch (type) {
    case MessageType.Initiation:
      return { size: MessageInitiationSize, exact: true };
    case MessageType.Response:
      return { size: MessageResponseSize, exact: true };
    case MessageType.CookieReply:
      return { size: MessageCookieReplySize, exact: true };
    case MessageType.Transport:
      return { size: MessageTransportSize, exact: false };
    default:
      return null;
  }
}

export function marshalInitiation(m: MessageInitiation): Uint8Array {
  const b = new Uint8Array(MessageInitiationSize);
  b[0] = MessageType.Initiation;
  putU32(b, 4, m.sender);
  b.set(m.ephemeral, 8);
  b.set(m.static, 40);
  b.set(m.timestamp, 88);
  b.set(m.mac1, 116);
  b.set(m.mac2, 132);
  return b;
}

export function unmarshalInitiation(b: Uint8Array): MessageInitiation | null {
  if (b.length !== MessageInitiationSize || messageType(b) !== MessageType.Initiation) return null;
  return {
    sender: u32(b, 4),
    ephemeral: b.subarray(8, 40),
    static: b.subarray(40, 88),
    timestamp: b.subarray(88, 116),
    mac1: b.subarray(116, 132),
    mac2: b.subarray(132, 148),
  };
}

export function marshalResponse(m: MessageResponse): Uint8Array {
  const b = new Uint8Array(MessageResponseSize);
  b[0] = MessageType.Response;
  putU32(b, 4, m.sender);
  putU32(b, 8, m.receiver);
  b.set(m.ephemeral, 12);
  b.set(m.empty, 44);
  b.set(m.mac1, 60);
  b.set(m.mac2, 76);
  return b;
}

export function unmarshalResponse(b: Uint8Array): MessageResponse | null {
  if (b.length !== MessageResponseSize || messageType(b) !== MessageType.Response) return null;
  return {
    sender: u32(b, 4),
    receiver: u32(b, 8),
    ephemeral: b.subarray(12, 44),
    empty: b.subarray(44, 60),
    mac1: b.subarray(60, 76),
    mac2: b.subarray(76, 92),
  };
}

export function marshalCookieReply(m: MessageCookieReply): Uint8Array {
  const b = new Uint8Array(MessageCookieReplySize);
  b[0] = MessageType.CookieReply;
  putU32(b, 4, m.receiver);
  b.set(m.nonce, 8);
  b.set(m.cookie, 32);
  return b;
}

export function unmarshalCookieReply(b: Uint8Array): MessageCookieReply | null {
  if (b.length !== MessageCookieReplySize || messageType(b) !== MessageType.CookieReply) return null;
  return { receiver: u32(b, 4), nonce: b.subarray(8, 32), cookie: b.subarray(32, 64) };
}

/** Transport header: type 4, receiver index, 64-bit counter; content follows at MessageTransportOffsetContent. */
export function writeTransportHeader(b: Uint8Array, receiver: number, counter: number): void {
  b[0] = MessageType.Transport;
  b[1] = 0;
  b[2] = 0;
  b[3] = 0;
  putU32(b, MessageTransportOffsetReceiver, receiver);
  putU32(b, MessageTransportOffsetCounter, counter >>> 0);
  putU32(b, MessageTransportOffsetCounter + 4, Math.floor(counter / 0x1_0000_0000) >>> 0);
}

/** The counter of a transport message; values beyond 2^53 come back as Infinity (rejected by the caller). */
export function readTransportCounter(b: Uint8Array): number {
  const lo = u32(b, MessageTransportOffsetCounter);
  const hi = u32(b, MessageTransportOffsetCounter + 4);
  if (hi >= 0x20_0000) return Infinity;
  return hi * 0x1_0000_0000 + lo;
}

export const TransportHeaderSize = MessageTransportHeaderSize;
