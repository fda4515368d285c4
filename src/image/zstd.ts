import { Decompress } from 'fzstd';

/**
 * Streaming zstd decompression (RFC 8878) for `application/vnd.oci.image.layer.v1.tar+zstd` layers,
 * with fzstd (pure JavaScript: no native build, runs on Node 20, which has no zstd in node:zlib).
 * fzstd supports back-references up to 2^25 bytes: every level below 20 ("ultra") fits. Output is
 * handed on chunk by chunk; a corrupt frame throws, and the layer is refused by the caller. A frame
 * fzstd decodes wrongly cannot pass anyway: the tar it yields must match the layer's diff_id.
 */
export async function* zstdDecompress(src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let out: Buffer[] = [];
  const d = new Decompress((chunk) => {
    out.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  });
  for await (const c of src) {
    d.push(c);
    if (out.length > 0) {
      const ready = out;
      out = [];
      yield* ready;
    }
  }
  d.push(new Uint8Array(0), true);
  yield* out;
}
