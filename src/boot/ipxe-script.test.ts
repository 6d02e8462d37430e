import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderBootScript, renderMessageScript } from './ipxe-script.js';

test('boot script loads kernel and named initrd, and retries on failure', () => {
  const s = renderBootScript({
    clientLabel: 'lab-pc-01 (52:54:00:12:34:56)', imageLabel: 'debian12 v3',
    kernelUrl: 'http://10.77.0.1:8080/boot/525400123456/t1/vmlinuz',
    initrdUrl: 'http://10.77.0.1:8080/boot/525400123456/t1/initrd.img',
    initrdName: 'initrd.img', commandLine: 'initrd=initrd.img ip=dhcp',
  });
  const lines = s.split('\n');
  assert.equal(lines[0], '#!ipxe');
  assert.ok(lines.includes('kernel http://10.77.0.1:8080/boot/525400123456/t1/vmlinuz initrd=initrd.img ip=dhcp || goto failed'));
  assert.ok(lines.includes('initrd --name initrd.img http://10.77.0.1:8080/boot/525400123456/t1/initrd.img || goto failed'));
  assert.ok(lines.indexOf('boot || goto failed') < lines.indexOf(':failed'));
});

test('labels cannot inject commands or expand settings', () => {
  const s = renderMessageScript({ message: ['unknown machine\nreboot', 'name ${ip} here'], retrySeconds: 0, retryUrl: '' });
  assert.ok(!s.split('\n').includes('reboot'), 'a line break in a label became a command');
  assert.ok(!s.includes('${ip}'));
  assert.match(s, /exit 1/);
  assert.throws(() => renderBootScript({
    clientLabel: 'x', imageLabel: 'y', kernelUrl: 'http://a/k', initrdUrl: 'http://a/i', initrdName: 'initrd.img',
    commandLine: 'ip=dhcp\nshell',
  }));
});

test('a waiting client retries the same script', () => {
  const s = renderMessageScript({ message: ['image not ready'], retrySeconds: 15, retryUrl: 'http://10.77.0.1:8080/boot.ipxe' });
  assert.match(s, /sleep 15\nchain --replace http:\/\/10\.77\.0\.1:8080\/boot\.ipxe\n/);
});
