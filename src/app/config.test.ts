import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDisklessError } from '../lib/errors.js';
import { DEFAULT_LIMITS } from '../protocols/nbd/limits.js';
import { CONFIG_SCHEMA, DEFAULT_DHCP_LEASE_SECONDS, type Spec } from './config-schema.js';
import { checkConfig, defaultConfig, loadConfig, networkList, validateConfig } from './config.js';
import { CONFIG_EXAMPLE, renderConfigDocs } from './config-docs.js';
import type { ConfigError } from './errors.js';

test('the empty configuration is every default, deep-frozen', () => {
  const c = defaultConfig();
  assert.equal(c.dataDir, '/var/lib/diskless');
  assert.equal(c.nbd.port, 10809);
  assert.equal(c.nbd.host, '0.0.0.0');
  assert.equal(c.nbd.limits.maxPayload, DEFAULT_LIMITS.maxPayload);
  assert.deepEqual(c.nbd.readOnlyExportsFrom, ['127.0.0.0/8', '::1/128']);
  assert.equal(c.tftp.enabled, true);
  assert.equal(c.tftp.ipxeDir, undefined);
  assert.deepEqual(c.dhcp.interfaces, []);
  assert.equal(c.boot.unknownClients, 'ignore');
  assert.equal(c.boot.uefiBinary, 'snponly.efi');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.nbd) && Object.isFrozen(c.nbd.limits) && Object.isFrozen(c.nbd.readOnlyExportsFrom));
  assert.throws(() => { (c.nbd as { port: number }).port = 1; }, TypeError);
  assert.throws(() => { (c.nbd.readOnlyExportsFrom as string[]).push('0.0.0.0/0'); }, TypeError);
});

test('every problem is listed, each with its path', () => {
  const { config, problems } = checkConfig({
    dataDir: 'relative/dir',
    nbd: { port: 'x', prot: 10809, limits: { maxPayload: 1, maxInFlight: 2.5 }, readOnlyExportsFrom: ['10.0.0.0/33'] },
    http: { port: 70000, publicUrl: 'ftp://x' },
    tftp: { enabled: 'yes' },
    dhcp: {
      interfaces: [
        { name: 'eth0', mode: 'fool' },
        { name: 'eth1', mode: 'full', subnet: '10.0.0.0/24', pool: { start: '10.0.0.300', end: '10.0.0.9' }, reservations: { 'zz:zz': '10.0.0.5' } },
      ],
    },
    boot: { unknownClients: 'default-image' },
    extra: true,
  });
  assert.equal(config, null);
  const expected = [
    'dataDir: must be an absolute path, got "relative/dir"',
    'nbd.prot: unknown option; did you mean "port"?',
    'nbd.port: must be an integer 0-65535, got "x"',
    'nbd.readOnlyExportsFrom[0]: must be an IP address or a network in CIDR form, e.g. 10.0.0.0/24 or ::1/128, got "10.0.0.0/33"',
    'nbd.limits.maxPayload: must be an integer 512-268435456, got 1',
    'nbd.limits.maxInFlight: must be an integer 1-65536, got 2.5',
    'http.port: must be an integer 0-65535, got 70000',
    'http.publicUrl: must be an http:// or https:// URL, got "ftp://x"',
    'tftp.enabled: must be true or false, got "yes"',
    'dhcp.interfaces[0].mode: must be one of "full", "proxy", got "fool"',
    'dhcp.interfaces[1].pool.start: must be an IPv4 address, got "10.0.0.300"',
    'dhcp.interfaces[1].reservations["zz:zz"]: "zz:zz" is not a MAC address',
    'extra: unknown option (known here: dataDir, nbd, http, tftp, dhcp, boot)',
  ];
  for (const p of expected) assert.ok(problems.includes(p), `missing problem: ${p}\n got:\n  ${problems.join('\n  ')}`);
  // boot is valid field by field, so its cross-field check ran too.
  assert.ok(problems.includes('boot.defaultImage: is required when boot.unknownClients is "default-image"'), problems.join('\n'));
  assert.equal(problems.length, expected.length + 1, problems.join('\n'));
});

test('validateConfig throws CONFIG_INVALID carrying every problem', () => {
  assert.throws(() => validateConfig({ nbd: { port: -1 }, http: { host: 'not a host!' } }), (err: unknown) => {
    assert.ok(isDisklessError(err, 'CONFIG_INVALID'));
    assert.deepEqual((err as ConfigError).problems, [
      'nbd.port: must be an integer 0-65535, got -1',
      'http.host: must be a host name or IP address, got "not a host!"',
    ]);
    assert.match((err as Error).message, /2 problems/);
    return true;
  });
});

test('DHCP: full mode needs a subnet and pool, and addresses inside it; proxy mode takes no address options', () => {
  const { problems } = checkConfig({
    dhcp: {
      interfaces: [
        { name: 'a', mode: 'full' },
        { name: 'b', mode: 'full', subnet: '10.0.0.0/24', pool: { start: '10.0.0.50', end: '10.0.0.10' }, router: '10.0.1.1', reservations: { '52:54:00:00:00:01': '10.0.0.255', '52-54-00-00-00-02': '10.0.0.7', '52:54:00:00:00:03': '10.0.0.7' }, leaseSeconds: 600, renewalSeconds: 590 },
        { name: 'c', mode: 'proxy', subnet: '10.0.0.0/24', dns: ['10.0.0.1'] },
        { name: 'c' },
      ],
    },
  });
  const expected = [
    'dhcp.interfaces[0].subnet: is required in mode "full"',
    'dhcp.interfaces[0].pool: is required in mode "full"',
    'dhcp.interfaces[1].pool: start 10.0.0.50 is after end 10.0.0.10',
    'dhcp.interfaces[1].router: is not a usable address of subnet 10.0.0.0/24',
    'dhcp.interfaces[1].reservations["52:54:00:00:00:01"]: 10.0.0.255 is not a usable address of subnet 10.0.0.0/24',
    'dhcp.interfaces[1].reservations["52:54:00:00:00:03"]: 10.0.0.7 is also reserved for 52:54:00:00:00:02',
    'dhcp.interfaces[1].renewalSeconds: renewal (590 s) < rebinding (525 s) < lease (600 s) must hold (RFC 2131 section 4.4.5)',
    'dhcp.interfaces[2].subnet: is only for mode "full" (a proxy hands out no addresses)',
    'dhcp.interfaces[2].dns: is only for mode "full" (a proxy hands out no addresses)',
  ];
  assert.deepEqual(problems, expected);
  // Interfaces valid one by one: then the duplicate name is found.
  const dup = checkConfig({ dhcp: { interfaces: [{ name: 'c' }, { name: 'c' }] } });
  assert.deepEqual(dup.problems, ['dhcp.interfaces[1].name: interface "c" is listed twice']);
});

test('reservation MACs are normalized; a valid full interface passes', () => {
  const { config, problems } = checkConfig(CONFIG_EXAMPLE);
  assert.deepEqual(problems, []);
  const c = validateConfig({ dhcp: { interfaces: [{ name: 'eth0', mode: 'full', subnet: '10.1.0.0/16', pool: { start: '10.1.0.10', end: '10.1.3.250' }, reservations: { '52-54-00-AA-BB-CC': '10.1.9.9' } }] } });
  assert.deepEqual(c.dhcp.interfaces[0]!.reservations, { '52:54:00:aa:bb:cc': '10.1.9.9' });
  assert.equal(c.dhcp.interfaces[0]!.leaseSeconds, 3600);
  assert.ok(config);
});

test('NBD and HTTP on one port is refused', () => {
  assert.deepEqual(checkConfig({ nbd: { port: 8080 } }).problems, ['http.port: is also nbd.port (8080); they must differ']);
  assert.deepEqual(checkConfig({ nbd: { port: 0 }, http: { port: 0 } }).problems, []);
});

test('the NBD limits in the schema are exactly the NBD server\'s, with its ranges', () => {
  const limits = (CONFIG_SCHEMA.fields.nbd.fields.limits as { fields: Record<string, { min: number; max: number }> }).fields;
  assert.deepEqual(Object.keys(limits).sort(), Object.keys(DEFAULT_LIMITS).sort());
  assert.equal(limits.maxPayload!.min, 512, 'range read from the NBD module');
  assert.ok(Object.values(limits).every((l) => l.max < Number.MAX_SAFE_INTEGER), 'every range was found');
});

test('the DHCP lease default is the DHCP server\'s', async () => {
  const { DEFAULT_LEASE_SECONDS } = await import('../protocols/dhcp/server.js');
  assert.equal(DEFAULT_DHCP_LEASE_SECONDS, DEFAULT_LEASE_SECONDS);
});

test('every option has help text', () => {
  const walk = (spec: Spec, path: string): void => {
    assert.ok(spec.help.trim().length > 10, `${path} has no help`);
    if (spec.type === 'object') for (const [k, f] of Object.entries(spec.fields)) walk(f, `${path}.${k}`);
    if (spec.type === 'array') walk(spec.items, `${path}[]`);
    if (spec.type === 'mac-map') walk(spec.value, `${path}{}`);
  };
  walk(CONFIG_SCHEMA, '');
  const docs = renderConfigDocs();
  for (const k of ['`nbd.port`', '`dhcp.interfaces[].pool.start`', '`boot.unknownClients`', '`nbd.limits.maxPayload`']) assert.ok(docs.includes(k), k);
});

test('files: missing, optional, bad JSON, overrides', () => {
  const dir = mkdtempSync(join(tmpdir(), 'diskless-config-'));
  try {
    assert.throws(() => loadConfig(join(dir, 'none.json')), (e: unknown) => isDisklessError(e, 'CONFIG_NOT_FOUND'));
    assert.equal(loadConfig(join(dir, 'none.json'), { mustExist: false }).nbd.port, 10809);
    writeFileSync(join(dir, 'bad.json'), '{\n  "nbd": {\n    "port": 1,\n  }\n}\n');
    assert.throws(() => loadConfig(join(dir, 'bad.json')), (e: unknown) => isDisklessError(e, 'CONFIG_UNREADABLE') && /line 4/.test((e as Error).message));
    writeFileSync(join(dir, 'ok.json'), JSON.stringify({ dataDir: 'oops', nbd: { port: 1234 } }));
    const c = loadConfig(join(dir, 'ok.json'), { overrides: { dataDir: '/srv/diskless' } });
    assert.equal(c.dataDir, '/srv/diskless');
    assert.equal(c.nbd.port, 1234);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('networkList matches IPv4 and IPv6 networks', () => {
  const l = networkList(['127.0.0.0/8', '::1/128', '10.1.2.3']);
  assert.ok(l.check('127.9.9.9', 'ipv4'));
  assert.ok(l.check('::1', 'ipv6'));
  assert.ok(l.check('10.1.2.3', 'ipv4'));
  assert.ok(!l.check('10.1.2.4', 'ipv4'));
  assert.ok(!l.check('::2', 'ipv6'));
});
