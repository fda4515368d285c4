import { LatticeError } from '../errors.js';

export const ImageErrorCode = {
  Rejected: 'EIMAGE_REJECTED',
  Format: 'EIMAGE_FORMAT',
  NotFound: 'EIMAGE_NOT_FOUND',
  Limit: 'EIMAGE_LIMIT',
} as const;

/**
 * A layer (or blob) broke a safety rule: the image is hostile or corrupt. Names the layer and the
 * entry so the user can see which part of the image to fix. Nothing of the rootfs is kept.
 */
export class ImageRejectedError extends LatticeError {
  override readonly name = 'ImageRejectedError';
  constructor(
    readonly layer: string,
    readonly entry: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      ImageErrorCode.Rejected,
      `image rejected: layer ${layer}: entry ${JSON.stringify(entry)}: ${reason}; the image is unsafe or corrupt, rebuild it`,
      options,
    );
  }
}

/** The image source is not a well-formed docker save archive / OCI layout / config. */
export class ImageFormatError extends LatticeError {
  override readonly name = 'ImageFormatError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(ImageErrorCode.Format, message, options);
  }
}

/** The image, archive or directory named by the user does not exist. */
export class ImageNotFoundError extends LatticeError {
  override readonly name = 'ImageNotFoundError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(ImageErrorCode.NotFound, message, options);
  }
}

/**
 * An image crossed one of the extraction limits (ExtractLimits): too much data, too many entries, a
 * name too long, or one file too large. Names the limit and the flag that raises it.
 */
export class ImageLimitError extends LatticeError {
  override readonly name = 'ImageLimitError';
  constructor(
    readonly layer: string,
    readonly entry: string,
    readonly limit: string,
    readonly value: number,
    flagKey: string,
    detail: string,
  ) {
    super(
      ImageErrorCode.Limit,
      `image exceeds the extraction limit ${limit}=${value} (${detail}) at layer ${layer}, entry ${JSON.stringify(entry)}; nothing was kept. If the image is trusted, raise it with --image-limits ${flagKey}=N`,
    );
  }
}
