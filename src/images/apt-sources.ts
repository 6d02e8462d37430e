/**
 * Which Debian mirror to build images from: the one this machine's apt
 * already uses, read from /etc/apt/sources.list (one-line format,
 * sources.list(5)) and /etc/apt/sources.list.d/*.list and *.sources
 * (deb822 format: Types, URIs, Suites, Components, Enabled). Nothing is
 * hard-coded; the build takes an explicit mirror option first.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface AptSource {
  types: string[];
  uris: string[];
  suites: string[];
  components: string[];
  enabled: boolean;
  file: string;
}

/** sources.list(5) one-line style: `deb [opt=val ...] URI SUITE [COMPONENT...]`. */
export function parseOneLineSources(text: string, file: string): AptSource[] {
  const out: AptSource[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) continue;
    const m = /^(deb|deb-src)\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)(.*)$/.exec(line);
    if (!m) continue;
    out.push({ types: [m[1]!], uris: [m[2]!], suites: [m[3]!], components: m[4]!.trim().split(/\s+/).filter(Boolean), enabled: true, file });
  }
  return out;
}

/** deb822 style: paragraphs of `Field: value` lines, continuation lines start with blanks, `#` comments. */
export function parseDeb822Sources(text: string, file: string): AptSource[] {
  const out: AptSource[] = [];
  for (const para of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const raw of para.split('\n')) {
      if (raw.startsWith('#')) continue;
      if (/^\s/.test(raw) && last) {
        fields.set(last, `${fields.get(last)} ${raw.trim()}`);
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(raw);
      if (!m) continue;
      last = m[1]!.toLowerCase();
      fields.set(last, m[2]!.trim());
    }
    const list = (k: string): string[] => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
    if (!fields.has('uris')) continue;
    out.push({
      types: list('types'),
      uris: list('uris'),
      suites: list('suites'),
      components: list('components'),
      enabled: !/^(no|false|0)$/i.test(fields.get('enabled') ?? 'yes'),
      file,
    });
  }
  return out;
}

/** Schemes debootstrap can fetch from. */
const USABLE = /^(https?|file):\/\//;
/** Suites that are not a distribution's main archive. */
const POCKET = /-(security|updates|backports|proposed-updates|proposed)$|\/updates$/;

/**
 * The mirror to debootstrap `suite` from: an enabled `deb` source listing
 * that suite, else the main archive (a source whose suites are not only
 * security/updates pockets) of whatever the machine runs.
 */
export function chooseMirror(sources: AptSource[], suite: string): string | undefined {
  const usable = sources.filter((s) => s.enabled && s.types.includes('deb') && s.uris.some((u) => USABLE.test(u)));
  const exact = usable.find((s) => s.suites.includes(suite));
  const main = exact ?? usable.find((s) => s.suites.some((x) => !POCKET.test(x)));
  return main?.uris.find((u) => USABLE.test(u))?.replace(/\/+$/, '');
}

/** Reads every apt source of the machine (or of `aptDir`, for tests). */
export async function readAptSources(aptDir = '/etc/apt'): Promise<AptSource[]> {
  const out: AptSource[] = [];
  const tryRead = async (p: string): Promise<string | undefined> => readFile(p, 'utf8').catch(() => undefined);
  const main = await tryRead(join(aptDir, 'sources.list'));
  if (main) out.push(...parseOneLineSources(main, join(aptDir, 'sources.list')));
  const dir = join(aptDir, 'sources.list.d');
  const names = (await readdir(dir).catch(() => [] as string[])).sort();
  for (const name of names) {
    const p = join(dir, name);
    if (name.endsWith('.list')) out.push(...parseOneLineSources((await tryRead(p)) ?? '', p));
    else if (name.endsWith('.sources')) out.push(...parseDeb822Sources((await tryRead(p)) ?? '', p));
  }
  return out;
}

export async function mirrorFromApt(suite: string, aptDir?: string): Promise<string | undefined> {
  return chooseMirror(await readAptSources(aptDir), suite);
}
