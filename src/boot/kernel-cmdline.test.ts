import { test } from 'node:test';
import assert from 'node:assert/strict';
import { kernelCommandLine } from './kernel-cmdline.js';
import { isDisklessError } from '../lib/errors.js';

const nbd = { server: '10.77.0.1', port: 10809, exportName: '525400123456-abcd' };

test('initramfs-tools: three-field nbdroot names nbd0 so root=UUID works (field notes)', () => {
  const line = kernelCommandLine({
    flavour: 'initramfs-tools', nbd, root: { uuid: '0d7c2c1e-1111-4222-8333-944455556666' },
    network: 'ipxe', initrdName: 'initrd.img', consoles: ['ttyS0,115200n8'],
  });
  assert.equal(
    line,
    'initrd=initrd.img console=ttyS0,115200n8 ip=${ip}::${gateway}:${netmask}:::off:${dns} BOOTIF=01-${mac:hexhyp} ' +
      'nbdroot=10.77.0.1,525400123456-abcd,nbd0 root=UUID=0d7c2c1e-1111-4222-8333-944455556666 rw systemd.gpt_auto=0',
  );
});

test('initramfs-tools on another port needs a partition, not a UUID', () => {
  assert.throws(
    () => kernelCommandLine({ flavour: 'initramfs-tools', nbd: { ...nbd, port: 10900 }, root: { uuid: 'x-1' }, network: 'dhcp' }),
    (e) => isDisklessError(e, 'BOOT_NO_ROOT'),
  );
  const line = kernelCommandLine({ flavour: 'initramfs-tools', nbd: { ...nbd, port: 10900 }, root: { partition: 1 }, network: 'dhcp' });
  assert.match(line, /nbdroot=10\.77\.0\.1:10900\/525400123456-abcd root=\/dev\/nbd0p1 /);
  assert.match(line, /^ip=dhcp /);
});

test('dracut: netroot with root=UUID, root=nbd: for a whole-disk file system', () => {
  const a = kernelCommandLine({ flavour: 'dracut', nbd, root: { uuid: 'u-1' }, network: 'dhcp' });
  assert.match(a, /netroot=nbd:10\.77\.0\.1:10809\/525400123456-abcd root=UUID=u-1 rd\.neednet=1/);
  const b = kernelCommandLine({ flavour: 'dracut', nbd, root: { partition: 0 }, network: 'dhcp' });
  assert.match(b, /root=nbd:10\.77\.0\.1:10809\/525400123456-abcd rd\.neednet=1/);
  assert.doesNotMatch(b, /netroot/);
});

test('extra arguments are appended in order and checked', () => {
  const line = kernelCommandLine({ flavour: 'dracut', nbd, root: { partition: 2 }, network: 'dhcp', extra: ['quiet', 'loglevel=3'] });
  assert.ok(line.endsWith('rw systemd.gpt_auto=0 quiet loglevel=3'));
  for (const bad of ['a b', 'x;reboot', '$(id)', '${foo}', 'a\nb', '']) {
    assert.throws(
      () => kernelCommandLine({ flavour: 'dracut', nbd, root: { partition: 2 }, network: 'dhcp', extra: [bad] }),
      (e) => isDisklessError(e, 'BOOT_UNSAFE_VALUE'),
      `accepted ${JSON.stringify(bad)}`,
    );
  }
  assert.throws(() => kernelCommandLine({ flavour: 'dracut', nbd: { ...nbd, exportName: 'a b' }, root: { partition: 1 }, network: 'dhcp' }));
  assert.throws(() => kernelCommandLine({ flavour: 'dracut', nbd: { ...nbd, port: 70000 }, root: { partition: 1 }, network: 'dhcp' }));
});
