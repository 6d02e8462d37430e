/**
 * `diskless export FILE`: one file served over NBD, as qemu-nbd does, for
 * inspection, debugging and benchmarks. No catalogue is involved.
 *
 * - default: the file itself, read-write;
 * - readOnly: the file, read-only (opened O_RDONLY: never written);
 * - cowDir: a persistent copy-on-write overlay in cowDir over the file
 *   opened read-only, so the file is never written and the overlay can be
 *   exported again later (it records the file's identity and refuses to
 *   open over a file that changed).
 *
 * The export is opened once, at start, so a bad file or overlay is reported
 * before anything listens; every connection shares that one device.
 */
import { basename } from 'node:path';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import { DisklessError } from '../lib/errors.js';
import { silentLogger, type Logger } from '../lib/log.js';
import type { ExportInfo, ExportResolver, OpenedExport, Peer } from '../protocols/nbd/exports.js';
import { NbdServer, type NbdLimits } from '../protocols/nbd/server.js';
import type { BlockDevice } from '../storage/block-device.js';
import { CowOverlay } from '../storage/cow/overlay.js';
import { FileDevice } from '../storage/file-device.js';
import { AppError } from './errors.js';

export const DEFAULT_EXPORT_LISTEN = '127.0.0.1:10809';

export interface FileExportOptions {
  file: string;
  /** Export name; the empty name (the default export) is always accepted too. Default "". */
  name?: string;
  readOnly?: boolean;
  /** Folder of a copy-on-write overlay over the file (created if missing). */
  cowDir?: string;
  logger?: Logger;
}

export class FileExportResolver implements ExportResolver {
  readonly name: string;
  readonly description: string;
  private opens = 0;

  private constructor(
    readonly device: BlockDevice,
    private readonly base: BlockDevice | null,
    name: string,
    description: string,
  ) {
    this.name = name;
    this.description = description;
  }

  static async open(options: FileExportOptions): Promise<FileExportResolver> {
    const log = options.logger ?? silentLogger;
    const name = options.name ?? '';
    if (options.readOnly && options.cowDir !== undefined) {
      throw new AppError('APP_INVALID_ARGUMENT', 'an export is read-only or copy-on-write, not both');
    }
    if (options.cowDir !== undefined) {
      const base = await FileDevice.open(options.file, { readOnly: true, logger: log });
      try {
        const overlay = await CowOverlay.open({ base, dir: options.cowDir, logger: log });
        return new FileExportResolver(overlay, base, name, `${basename(options.file)} with a copy-on-write overlay in ${options.cowDir}`);
      } catch (err) {
        await base.close();
        throw err;
      }
    }
    const readOnly = options.readOnly ?? false;
    const device = await FileDevice.open(options.file, { readOnly, logger: log });
    return new FileExportResolver(device, null, name, `${basename(options.file)}, ${readOnly ? 'read-only' : 'read-write'}`);
  }

  async list(_peer: Peer): Promise<ExportInfo[]> {
    return [{ name: this.name, description: this.description }];
  }

  async open(name: string, _peer: Peer): Promise<OpenedExport> {
    if (name !== this.name && name !== '') throw new DisklessError('NBD_EXPORT_UNKNOWN', `no export named "${name}" (this server exports "${this.name}")`);
    this.opens++;
    let released = false;
    return {
      name: this.name,
      description: this.description,
      device: this.device,
      release: async () => {
        if (released) return;
        released = true;
        this.opens--;
      },
    };
  }

  /** Connections open now. */
  get openCount(): number {
    return this.opens;
  }

  /** Flushes and closes the device (and the base under an overlay). */
  async close(): Promise<void> {
    try {
      await this.device.close();
    } finally {
      await this.base?.close();
    }
  }
}

/** `HOST:PORT`, `[IPV6]:PORT`, or `PORT` alone (on 127.0.0.1). */
export function parseListen(text: string): { host: string; port: number } {
  const bad = (): never => {
    throw new AppError('APP_LISTEN_INVALID', `"${text}" is not HOST:PORT (IPv6 as [ADDR]:PORT; port 0-65535)`);
  };
  let host: string;
  let portText: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  if (v6) {
    host = v6[1]!;
    portText = v6[2]!;
    if (isIP(host) !== 6) bad();
  } else if (/^\d+$/.test(text)) {
    host = '127.0.0.1';
    portText = text;
  } else {
    const i = text.lastIndexOf(':');
    if (i <= 0) return bad();
    host = text.slice(0, i);
    portText = text.slice(i + 1);
    if (host.includes(':') || !/^[A-Za-z0-9.-]+$/.test(host)) bad();
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) bad();
  return { host, port: Number(portText) };
}

export interface FileExportHandle {
  resolver: FileExportResolver;
  server: NbdServer;
  address: AddressInfo;
  /** nbd://host:port/name, as nbdinfo and qemu take it. */
  uri: string;
  close(): Promise<void>;
}

/** Opens the export and starts an NBD server for it. */
export async function startFileExport(
  options: FileExportOptions & { host: string; port: number; limits?: Partial<NbdLimits> },
): Promise<FileExportHandle> {
  const log = options.logger ?? silentLogger;
  const resolver = await FileExportResolver.open(options);
  const server = new NbdServer({ resolver, logger: log, ...(options.limits ? { limits: options.limits } : {}) });
  let address: AddressInfo;
  try {
    address = await server.listen(options.port, options.host);
  } catch (err) {
    await server.close();
    await resolver.close();
    throw err;
  }
  const hostText = address.family === 'IPv6' || address.address.includes(':') ? `[${address.address}]` : address.address;
  const uri = `nbd://${hostText}:${address.port}/${encodeURIComponent(resolver.name)}`;
  let closing: Promise<void> | null = null;
  return {
    resolver, server, address, uri,
    close: () => {
      closing ??= (async () => {
        await server.close();
        await resolver.close();
      })();
      return closing;
    },
  };
}
