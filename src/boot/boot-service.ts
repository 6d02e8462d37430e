/**
 * What the HTTP endpoints that firmware and iPXE fetch need from the rest of
 * the server. The app implements it over the catalogue; tests implement it
 * with fixed answers.
 */

export interface BootRequest {
  /** Normalized MAC (aa:bb:cc:dd:ee:ff), or null when the URL named none. */
  mac: string | null;
  /** Source address of the HTTP request. */
  address: string;
  /** The base URL the client reached us by, e.g. http://10.77.0.1:8080 */
  baseUrl: string;
}

export interface BootFile {
  path: string;
  size: number;
  /** Strong validator; changes whenever the bytes may have changed. */
  etag: string;
  lastModified: Date;
}

export type BootFileName = 'vmlinuz' | 'initrd.img';

export interface BootService {
  /** The iPXE script for this client; always a script, never an error page. */
  script(request: BootRequest): Promise<string>;
  /** Kernel or initramfs of the version the client is booting; null when this boot id is not the client's. */
  bootFile(request: BootRequest & { bootId: string; name: BootFileName }): Promise<BootFile | null>;
  /** iPXE binaries for UEFI HTTP boot (e.g. ipxe.efi, snponly.efi); null when unknown. */
  firmwareFile(name: string): Promise<BootFile | null>;
  /** The client reports that its OS is up; false when the boot id is not the client's current one. */
  osUp(request: BootRequest & { bootId: string }): Promise<boolean>;
}
