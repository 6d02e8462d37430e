// How numbers and times are shown. Pure functions (the tests call them in the browser).

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 -> "1.5 KiB"; null -> "—". */
export function formatBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  let v = Math.max(0, n);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v < 10 ? v.toFixed(1) : Math.round(v)} ${UNITS[i]}`;
}

/** Bytes per second -> "1.5 MiB/s". */
export function formatRate(bps) {
  if (typeof bps !== 'number' || !Number.isFinite(bps)) return '—';
  return `${formatBytes(Math.round(bps))}/s`;
}

/** Milliseconds -> "850 ms", "12.4 s", "3 min 05 s", "2 h 07 min", "3 d 4 h". */
export function formatDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '—';
  const neg = ms < 0;
  let v = Math.abs(ms);
  let out;
  if (v < 1000) out = `${Math.round(v)} ms`;
  else if (v < 60_000) out = `${(v / 1000).toFixed(1)} s`;
  else if (v < 3_600_000) {
    const m = Math.floor(v / 60_000);
    out = `${m} min ${String(Math.floor((v % 60_000) / 1000)).padStart(2, '0')} s`;
  } else if (v < 86_400_000) {
    const hours = Math.floor(v / 3_600_000);
    out = `${hours} h ${String(Math.floor((v % 3_600_000) / 60_000)).padStart(2, '0')} min`;
  } else {
    out = `${Math.floor(v / 86_400_000)} d ${Math.floor((v % 86_400_000) / 3_600_000)} h`;
  }
  return neg ? `-${out}` : out;
}

/** An ISO time -> the admin's local date and time; null -> "—". */
export function formatTime(iso) {
  const t = parseTime(iso);
  if (t === null) return '—';
  return new Date(t).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

/** An ISO time -> "12.4 s ago". */
export function formatAgo(iso, now = Date.now()) {
  const t = parseTime(iso);
  if (t === null) return '—';
  return `${formatDuration(Math.max(0, now - t))} ago`;
}

/** Milliseconds since the epoch, or null. */
export function parseTime(iso) {
  if (typeof iso !== 'string') return null;
  const t = Date.parse(iso);
  return Number.isFinite(t) ? t : null;
}

/** A <time> element needs the machine-readable form too. */
export function timeAttr(iso) {
  return parseTime(iso) === null ? null : iso;
}
