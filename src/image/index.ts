// Public API of src/image: rootfs from a directory, a tarball, a Docker image, a docker save archive or an OCI layout.
export { resolveRootfs, rootfsSourceFromArg, RootfsKind, type RootfsSource, type ResolveRootfsOptions, type ResolvedRootfs } from './rootfs.js';
export { processFromImage, parseImageConfig, type ImageConfig, type ProcessOverrides, type ProcessSpec } from './config.js';
export { ImageRejectedError, ImageLimitError, ImageFormatError, ImageNotFoundError, ImageErrorCode } from './errors.js';
export { extractLayers, parseImageLimits, DEFAULT_EXTRACT_LIMITS, ImageExtractError, type LayerInput, type ExtractOptions, type ExtractLimits } from './extract.js';
export { createProgressReporter, ImagePhase, type ImageProgress } from './progress.js';
