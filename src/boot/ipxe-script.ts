/**
 * iPXE scripts handed to clients. Every script is plain text starting with
 * `#!ipxe`; values from the catalogue are checked before they are written so
 * that nothing a user typed can add a command. A client that cannot boot yet
 * gets a script that says why on its screen and retries, never an HTTP error
 * page (iPXE would only print "Operation not permitted" and stop).
 */
import { assertSafeToken } from './kernel-cmdline.js';

export interface BootScriptOptions {
  /** For the comment at the top and the banner. */
  clientLabel: string;
  imageLabel: string;
  kernelUrl: string;
  initrdUrl: string;
  /** The initrd name the kernel command line refers to (initrd=NAME). */
  initrdName: string;
  commandLine: string;
  /** URL iPXE requests (best effort) once the kernel is loaded, so the timeline shows it. */
}

const LINE_SAFE = /^[^\r\n]*$/;

function line(value: string): string {
  if (!LINE_SAFE.test(value)) throw new Error('a script line may not contain a line break');
  return value;
}

/** The script that loads a kernel and initramfs and boots them. */
export function renderBootScript(o: BootScriptOptions): string {
  assertSafeToken('kernel URL', o.kernelUrl);
  assertSafeToken('initrd URL', o.initrdUrl);
  assertSafeToken('initrd name', o.initrdName);
  return [
    '#!ipxe',
    line(`# diskless boot script for ${label(o.clientLabel)}: ${label(o.imageLabel)}`),
    line(`echo diskless: booting ${label(o.imageLabel)}`),
    // --name lets the EFI stub find the initrd by the name given with initrd= (field notes).
    line(`kernel ${o.kernelUrl} ${o.commandLine}`) + ' || goto failed',
    line(`initrd --name ${o.initrdName} ${o.initrdUrl}`) + ' || goto failed',
    'boot || goto failed',
    ':failed',
    'echo diskless: loading the kernel or initramfs failed; retrying in 10 seconds',
    'sleep 10',
    'reboot',
    '',
  ].join('\n');
}

export interface WaitScriptOptions {
  /** One or more lines shown on the client's screen. */
  message: string[];
  /** Retry the script after this many seconds; 0 means stop (exit to firmware). */
  retrySeconds: number;
  /** URL of this same script, for the retry. */
  retryUrl: string;
}

/** The script for a client that cannot boot (unknown, not ready, refused). */
export function renderMessageScript(o: WaitScriptOptions): string {
  const out = ['#!ipxe'];
  for (const m of o.message) out.push(line(`echo ${label(m)}`));
  if (o.retrySeconds > 0) {
    assertSafeToken('retry URL', o.retryUrl);
    out.push(`echo retrying in ${Math.floor(o.retrySeconds)} seconds`, `sleep ${Math.floor(o.retrySeconds)}`, `chain --replace ${o.retryUrl}`);
  } else {
    out.push('sleep 10', 'exit 1');
  }
  out.push('');
  return out.join('\n');
}

/** Text safe inside an iPXE `echo`: no setting expansion, no line breaks. */
function label(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/\$\{/g, '$ {').replace(/[^\x20-\x7e]/g, '?');
}
