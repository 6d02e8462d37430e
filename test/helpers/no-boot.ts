/**
 * A BootService that boots nothing, for tests of HTTP routes other than the
 * boot routes (the REST API, the kit and capture, the dashboard) that need an
 * HttpServer to mount them on.
 */
import type { BootService } from '../../src/boot/boot-service.js';

export const NO_BOOT: BootService = {
  async script() { return '#!ipxe\n'; },
  async bootFile() { return null; },
  async firmwareFile() { return null; },
  async osUp() { return false; },
};
