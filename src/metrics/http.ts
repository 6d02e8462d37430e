/**
 * The HTTP side of metrics, as HTTP server extensions (see
 * HttpServerOptions.extensions): a hook that counts every response by
 * method, route and status class and times it, and the GET /metrics route.
 *
 * The web framework is reached only through the instance the HTTP server
 * hands its extensions (one door per dependency: only src/api imports it).
 *
 * Labels stay bounded whatever clients send: `route` is the route pattern
 * (`/boot/:mac/:bootId/:file`), never the URL, and `unmatched` for
 * requests no route took (404s of scanners); `method` is one of the HTTP
 * methods or `other`; `status` is the class (`2xx` ... `5xx`).
 */
import type { HttpServerOptions } from '../api/http-server.js';
import { Counter, Histogram, LATENCY_BUCKETS_SECONDS, PROMETHEUS_CONTENT_TYPE, renderPrometheusText, type MetricFamily } from './registry.js';

export type HttpExtension = NonNullable<HttpServerOptions['extensions']>[number];

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
export const UNMATCHED_ROUTE = 'unmatched';

export function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other';
}

/** Request counters and latency of the HTTP server; fed by httpMetricsHook(). */
export class HttpMetrics {
  readonly requests = new Counter({
    name: 'diskless_http_requests_total',
    help: 'HTTP responses sent, by method, route pattern and status class.',
    labelNames: ['method', 'route', 'status'],
  });
  readonly duration = new Histogram({
    name: 'diskless_http_request_duration_seconds',
    help: 'Time from receiving an HTTP request to the end of its response (a whole kernel download for boot files), by method and route pattern.',
    labelNames: ['method', 'route'],
    buckets: LATENCY_BUCKETS_SECONDS,
  });

  /** Records one response. */
  observe(method: string, route: string | undefined, status: number, seconds: number): void {
    const m = METHODS.has(method) ? method : 'other';
    const r = route ?? UNMATCHED_ROUTE;
    this.requests.inc({ method: m, route: r, status: statusClass(status) });
    this.duration.observe({ method: m, route: r }, seconds);
  }

  /** Responses recorded, all routes. */
  total(): number {
    return this.requests.collect().samples.reduce((n, s) => n + ('value' in s ? s.value : 0), 0);
  }

  /** Responses with status 400 or more: refused or failed. */
  errors(): number {
    return this.requests
      .collect()
      .samples.reduce((n, s) => n + ('value' in s && (s.labels.status === '4xx' || s.labels.status === '5xx') ? s.value : 0), 0);
  }

  collect(): MetricFamily[] {
    return [this.requests.collect(), this.duration.collect()];
  }
}

/**
 * An extension that feeds `metrics` from every response of the server,
 * the routes of other extensions included (the hook is on the root
 * instance). A request whose client went away before the response ended
 * is not counted.
 */
export function httpMetricsHook(metrics: HttpMetrics): HttpExtension {
  return (app) => {
    app.addHook('onResponse', async (req, reply) => {
      metrics.observe(req.method, req.routeOptions.url, reply.statusCode, reply.elapsedTime / 1000);
    });
  };
}

export interface MetricsRoutesOptions {
  /** Families to expose, read at each scrape. */
  collect: () => Promise<MetricFamily[]> | MetricFamily[];
  /** Default `/metrics`. */
  path?: string;
}

/** GET /metrics in the Prometheus text format 0.0.4. Open, like the boot routes: it carries no secrets (no export tokens). */
export function metricsRoutes(options: MetricsRoutesOptions): HttpExtension {
  const path = options.path ?? '/metrics';
  return (app) => {
    app.get(path, async (_req, reply) => {
      const text = renderPrometheusText(await options.collect());
      return reply.type(PROMETHEUS_CONTENT_TYPE).header('cache-control', 'no-store').send(text);
    });
  };
}
