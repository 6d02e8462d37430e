/**
 * Shared limits and helpers for extents() answers.
 */

/**
 * extents() stops after this many extents. The interface only promises to
 * cover the first byte, so a caller (NBD block status) asks again from where
 * the answer ended; this bounds the memory and time of one answer on a large,
 * fragmented disk.
 */
export const MAX_EXTENTS_PER_CALL = 65536;
