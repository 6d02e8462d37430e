/**
 * The JSON form of catalogue records, shared by `--json` of the CLI and the
 * REST API so both print the same shape: times kept in `*Ms` fields become
 * `*At` ISO 8601 strings (null stays null); nested objects and the objects
 * inside arrays are converted the same way; everything else is kept as it is.
 */
export function toJson<T extends object>(record: T): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(record)) {
    if (k.endsWith('Ms') && (typeof v === 'number' || v === null)) out[k.slice(0, -2) + 'At'] = v === null ? null : new Date(v).toISOString();
    else out[k] = jsonValue(v);
  }
  return out;
}

/** toJson for any value: arrays element by element, objects by toJson, the rest unchanged. */
export function jsonValue(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(jsonValue);
  if (v !== null && typeof v === 'object' && !Buffer.isBuffer(v)) return toJson(v);
  return v;
}
