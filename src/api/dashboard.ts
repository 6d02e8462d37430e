/**
 * The web dashboard's files, served by the HTTP service as an extension:
 *
 *   new HttpServer({ ..., extensions: [restApi({...}), dashboard()] });
 *
 * GET / redirects to /ui/; /ui/ is the dashboard (web/index.html) and
 * /ui/<path> its ES modules and style sheet. The dashboard is static: it
 * asks the REST API (/api/v1) for everything with the token the admin logs
 * in with, so these routes are open and serve no data.
 *
 * Design note. The files are read once, when the plugin is registered, into
 * a table keyed by their path under the folder (a few small files: the
 * whole dashboard is tens of kilobytes). A request is answered from that
 * table or refused, so no request path ever reaches the file system: there
 * is no traversal to guard against, and a file added to the folder later is
 * served only after a restart, like the server's own code. Only known kinds
 * of files are taken (HTML, JavaScript, CSS, SVG, PNG, ICO); dotfiles,
 * links out of the folder and anything past the limits are left out.
 *
 * Every answer carries a Content-Security-Policy that allows scripts, styles
 * and fetches from this server only and no inline script: the dashboard
 * inserts what the server sends (MACs, names: untrusted input) as text, and
 * the policy is the second line of defence should that ever slip.
 * Assets are revalidated on every load (Cache-Control: no-cache with an
 * ETag), so an upgraded server is never run with a stale mix of modules.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { silentLogger, type Logger } from '../lib/log.js';
import { HttpError } from './errors.js';

/** Where the dashboard is mounted. */
export const DASHBOARD_PREFIX = '/ui';

export const DASHBOARD_DEFAULTS = {
  /** Bytes of one file; larger ones are left out (the dashboard's largest is a few kilobytes). */
  maxFileBytes: 512 * 1024,
  /** Files taken from the folder at most. */
  maxFiles: 200,
  /** Folder depth walked below the root. */
  maxDepth: 4,
} as const;

export interface DashboardOptions {
  /** The folder of the dashboard's files; default: `web/` of this package. */
  root?: string;
  logger?: Logger;
  /** Redirect GET / to the dashboard (default true). */
  redirectRoot?: boolean;
}

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/**
 * No inline script or style, nothing from elsewhere; fetch() to this server
 * only (the REST API and its event stream). `frame-ancestors 'none'` keeps
 * the dashboard's buttons from being framed by another page.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': DASHBOARD_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

export interface LoadedAssets {
  root: string;
  /** By path relative to the root, with `/` separators: `index.html`, `pages/clients.js`. */
  files: Map<string, Asset>;
  /** Why files were left out, for the log. */
  skipped: string[];
}

/** The folder `web/` of this package, found above this file (in src/ or in dist/src/). */
export function defaultDashboardRoot(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'web');
    try {
      if (statSync(join(dir, 'package.json')).isFile() && statSync(join(candidate, 'index.html')).isFile()) return candidate;
    } catch {
      // Not here; look higher.
    }
    dir = dirname(dir);
  }
  return null;
}

/** Reads the dashboard's files into memory; throws when the folder cannot be read. */
export function loadDashboardAssets(root: string): LoadedAssets {
  const real = realpathSync(root);
  const files = new Map<string, Asset>();
  const skipped: string[] = [];
  const walk = (dir: string, depth: number): void => {
    for (const name of readdirSync(dir).sort()) {
      const full = join(dir, name);
      const rel = relative(real, full).split(sep).join('/');
      if (name.startsWith('.')) continue;
      const st = lstatSync(full);
      if (st.isSymbolicLink()) {
        skipped.push(`${rel}: a symbolic link`);
        continue;
      }
      if (st.isDirectory()) {
        if (depth >= DASHBOARD_DEFAULTS.maxDepth) skipped.push(`${rel}: deeper than ${DASHBOARD_DEFAULTS.maxDepth} folders`);
        else walk(full, depth + 1);
        continue;
      }
      const type = TYPES[extname(name).toLowerCase()];
      if (!st.isFile() || !type) continue;
      if (st.size > DASHBOARD_DEFAULTS.maxFileBytes) {
        skipped.push(`${rel}: ${st.size} bytes, more than ${DASHBOARD_DEFAULTS.maxFileBytes}`);
        continue;
      }
      if (files.size >= DASHBOARD_DEFAULTS.maxFiles) {
        skipped.push(`${rel}: more than ${DASHBOARD_DEFAULTS.maxFiles} files`);
        continue;
      }
      const body = readFileSync(full);
      const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
      files.set(rel, { body, type, etag });
    }
  };
  walk(real, 0);
  return { root: real, files, skipped };
}

/** The plugin for HttpServerOptions.extensions. */
export function dashboard(options: DashboardOptions = {}): (app: FastifyInstance) => Promise<void> {
  const log = (options.logger ?? silentLogger).child({ protocol: 'http', module: 'dashboard' });
  return async (app: FastifyInstance) => {
    const root = options.root ?? defaultDashboardRoot();
    let assets: LoadedAssets | null = null;
    let missing = '';
    if (root === null) {
      missing = 'the dashboard\'s files (web/) were not found beside this server';
    } else {
      try {
        assets = loadDashboardAssets(root);
        if (!assets.files.has('index.html')) {
          missing = `the dashboard folder ${assets.root} has no index.html`;
          assets = null;
        }
      } catch (err) {
        missing = `the dashboard folder ${root} cannot be read: ${(err as Error).message}`;
      }
    }
    // The rest of the server works without the dashboard: say why it is missing, serve the rest.
    if (assets) {
      log.info('dashboard files loaded', { root: assets.root, files: assets.files.size, ...(assets.skipped.length > 0 ? { skipped: assets.skipped } : {}) });
    } else {
      log.warn('dashboard not served', { reason: missing });
    }

    const send = (req: FastifyRequest, reply: FastifyReply, path: string): FastifyReply => {
      if (!assets) throw new HttpError('HTTP_NOT_FOUND', missing);
      const a = assets.files.get(path);
      if (!a) throw new HttpError('HTTP_NOT_FOUND', `the dashboard has no file ${JSON.stringify(path.slice(0, 100))}`);
      reply.headers(SECURITY_HEADERS).header('cache-control', 'no-cache').header('etag', a.etag).type(a.type);
      const inm = req.headers['if-none-match'];
      if (typeof inm === 'string' && inm.split(',').some((t) => t.trim() === a.etag)) return reply.status(304).send();
      return reply.header('content-length', a.body.length).send(a.body);
    };

    if (options.redirectRoot ?? true) {
      app.get('/', async (_req, reply) => reply.redirect(`${DASHBOARD_PREFIX}/`, 302));
    }
    app.get(DASHBOARD_PREFIX, async (_req, reply) => reply.redirect(`${DASHBOARD_PREFIX}/`, 301));
    app.get(`${DASHBOARD_PREFIX}/`, async (req, reply) => send(req, reply, 'index.html'));
    app.get<{ Params: { '*': string } }>(`${DASHBOARD_PREFIX}/*`, async (req, reply) => send(req, reply, req.params['*']));
  };
}
