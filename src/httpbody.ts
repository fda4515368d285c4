import type { IncomingMessage } from 'node:http';

/**
 * The one bounded JSON body reader, shared by the control plane's admin HTTP API and the agent API.
 *
 * A body is refused (413) as soon as its declared Content-Length or the bytes read so far pass `maxBytes`,
 * so a hostile client cannot make the server buffer more than that. The rest of an oversized body is left
 * unread: the caller replies and closes the connection (`req.complete` is false then).
 */
export type JsonBody =
  /** `value` is the parsed JSON, or undefined for an empty (or all-whitespace) body. */
  | { ok: true; value: unknown }
  /** `status` is 413 (too big) or 400 (unreadable or not JSON); `message` is one line. */
  | { ok: false; status: 400 | 413; message: string };

/** Read and parse the request body (UTF-8 JSON, at most `maxBytes` bytes). Never throws. */
export async function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<JsonBody> {
  const tooBig = { ok: false, status: 413, message: `body larger than ${maxBytes} bytes` } as const;
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > maxBytes) return tooBig;
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > maxBytes) return tooBig;
      chunks.push(c);
    }
  } catch {
    return { ok: false, status: 400, message: 'body could not be read' };
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text.trim()) return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, status: 400, message: `body is not valid JSON: ${(err as Error).message.split('\n')[0]}` };
  }
}
