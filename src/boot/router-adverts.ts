/**
 * IPv6 router advertisements on a boot link, so that iPXE does not wait
 * 13-20 s for IPv6 at every boot (see README.md: with no router on the link
 * it waits for its router solicitations to time out before it fetches its
 * script; with an advertisement it goes on within a second).
 *
 * Node cannot send one itself: a router advertisement is ICMPv6 (RFC 4861
 * section 4.2) and Node has no raw sockets. dnsmasq can, in RA-only mode,
 * and is supervised here as a child process:
 *   - no DHCPv4 and no DNS (`--port=0`, no IPv4 range): it never competes
 *     with the DHCP server;
 *   - `ra-only` on the interface's own IPv6 prefix (`constructor:IF`), which
 *     the interface must have (a ULA such as fd00:..::1/64 will do);
 *   - router lifetime 0 (`--ra-param=IF,INTERVAL,0`, RFC 4861 section
 *     6.2.3 AdvDefaultLifetime): no client takes the server as its default
 *     router, they only learn the link has been configured.
 * It is restarted a bounded number of times if it dies.
 *
 * startBootServices (src/app/boot-services.ts) runs one on every DHCP
 * interface when the configuration says `boot.routerAdvertisements: "on"`
 * (off by default: see docs/firmware-quirks.md for why).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { silentLogger, type Logger } from '../lib/log.js';

export const RA_DEFAULTS = {
  binary: '/usr/sbin/dnsmasq',
  /** Unsolicited advertisements every this many seconds (iPXE's solicitations are answered at once anyway). */
  intervalSeconds: 60,
  /** From start to dnsmasq saying it advertises on the interface. */
  readyTimeoutMs: 10_000,
  stopGraceMs: 3_000,
  restartDelayMs: 5_000,
  maxRestarts: 5,
  /** Output lines kept to explain a failure. */
  keepLines: 20,
} as const;

export interface RouterAdvertiserOptions {
  /** The boot link's interface, e.g. `enp3s0`. */
  interface: string;
  binary?: string;
  intervalSeconds?: number;
  logger?: Logger;
}

const INTERFACE_NAME = /^[A-Za-z0-9_.:@-]{1,15}$/;

/** The dnsmasq command line (without the binary). Pure. */
export function routerAdvertArgs(iface: string, intervalSeconds: number = RA_DEFAULTS.intervalSeconds): string[] {
  if (!INTERFACE_NAME.test(iface)) throw new TypeError(`not an interface name: ${JSON.stringify(iface)}`);
  if (!Number.isInteger(intervalSeconds) || intervalSeconds < 4 || intervalSeconds > 1800) {
    throw new TypeError('intervalSeconds must be an integer from 4 to 1800 (RFC 4861 MaxRtrAdvInterval)');
  }
  return [
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--pid-file=',
    '--log-facility=-',
    '--port=0',
    `--interface=${iface}`,
    '--bind-interfaces',
    '--enable-ra',
    `--dhcp-range=::,constructor:${iface},ra-only`,
    `--ra-param=${iface},${intervalSeconds},0`,
  ];
}

export class RouterAdvertiser {
  private readonly log: Logger;
  private readonly binary: string;
  private readonly args: string[];
  private child: ChildProcess | null = null;
  private lines: string[] = [];
  private restarts = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly options: RouterAdvertiserOptions) {
    this.log = (options.logger ?? silentLogger).child({ component: 'router-adverts', interface: options.interface });
    this.binary = options.binary ?? RA_DEFAULTS.binary;
    this.args = routerAdvertArgs(options.interface, options.intervalSeconds);
  }

  /** Resolves once dnsmasq advertises on the interface; rejects (with its last words) if it cannot. */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('router advertiser is closed'));
    return new Promise((resolve, reject) => {
      this.lines = [];
      const child = spawn(this.binary, this.args, { stdio: ['ignore', 'pipe', 'pipe'] });
      this.child = child;
      let ready = false;
      const fail = (why: string): void => {
        if (ready) return;
        ready = true;
        clearTimeout(timer);
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        reject(new Error(`router advertisements on ${this.options.interface}: ${why}${this.lines.length ? `; dnsmasq said: ${this.lines.join(' | ')}` : ''}`));
      };
      const timer = setTimeout(() => fail(`dnsmasq did not start advertising within ${RA_DEFAULTS.readyTimeoutMs} ms (does the interface have an IPv6 prefix?)`), RA_DEFAULTS.readyTimeoutMs);
      const onLine = (line: string): void => {
        this.lines.push(line);
        if (this.lines.length > RA_DEFAULTS.keepLines) this.lines.shift();
        this.log.debug('dnsmasq', { line });
        if (!ready && /router advertisement on /.test(line)) {
          ready = true;
          clearTimeout(timer);
          this.log.info('sending router advertisements', { pid: child.pid });
          resolve();
        }
      };
      for (const stream of [child.stdout, child.stderr]) {
        let rest = '';
        stream.setEncoding('utf8');
        stream.on('data', (chunk: string) => {
          const parts = (rest + chunk).split('\n');
          rest = parts.pop()!.slice(-4096);
          for (const p of parts) if (p.trim()) onLine(p.trim());
        });
      }
      child.on('error', (err) => fail(err.message));
      child.on('exit', (code, signal) => {
        if (this.child === child) this.child = null;
        if (!ready) return fail(`dnsmasq exited (${code ?? signal})`);
        if (!this.closed) this.onUnexpectedExit(code, signal);
      });
    });
  }

  /** Stops dnsmasq (SIGTERM, then SIGKILL). Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), RA_DEFAULTS.stopGraceMs);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }

  private onUnexpectedExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.restarts >= RA_DEFAULTS.maxRestarts) {
      this.log.error('dnsmasq keeps exiting; router advertisements stopped (iPXE will wait for IPv6 again)', { code, signal, lines: this.lines });
      return;
    }
    this.restarts++;
    this.log.warn('dnsmasq exited; restarting it', { code, signal, restart: this.restarts });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.closed) return;
      this.start().catch((err: unknown) => this.log.error('router advertisements could not be restarted', { err }));
    }, RA_DEFAULTS.restartDelayMs);
    this.restartTimer.unref();
  }
}
