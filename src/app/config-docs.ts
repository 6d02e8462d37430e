/**
 * Renders docs/configuration.md from the configuration schema's help text
 * (`diskless config docs > docs/configuration.md`). A test fails when the
 * file in the repository differs from what this renders.
 */
import { CONFIG_SCHEMA, DEFAULT_CONFIG_PATH, type Spec, type StringFormat } from './config-schema.js';

const FORMAT_TYPE: Record<StringFormat, string> = {
  'absolute-path': 'absolute path',
  host: 'host or IP address',
  ipv4: 'IPv4 address',
  cidr4: 'IPv4 network (CIDR)',
  cidr: 'IP address or network (CIDR)',
  'http-url': 'http(s) URL',
  'interface-name': 'interface name',
  'image-name': 'image name',
  'domain-name': 'domain name',
  'kernel-args': 'kernel arguments',
};

function typeText(spec: Spec): string {
  switch (spec.type) {
    case 'string': return spec.format ? `string (${FORMAT_TYPE[spec.format]})` : 'string';
    case 'integer': return `integer ${spec.min}-${spec.max}`;
    case 'boolean': return 'boolean';
    case 'enum': return spec.values.map((v) => `\`"${v}"\``).join(' or ');
    case 'array': {
      const items = spec.items;
      if (items.type === 'object') return 'list of objects';
      return `list (each: ${items.type === 'string' && items.format ? FORMAT_TYPE[items.format] : typeText(items)})`;
    }
    case 'mac-map': return `object: MAC → ${typeText(spec.value)}`;
    case 'object': return 'object';
  }
}

function defaultText(spec: Spec): string {
  if (spec.defaultText) return spec.defaultText;
  if ('default' in spec && spec.default !== undefined) return '`' + JSON.stringify(spec.default) + '`';
  if (spec.type === 'object' && !spec.optional) return '';
  return spec.optional ? '(none)' : '**required**';
}

const cell = (text: string): string => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** Rows for every option under `spec`, with paths relative to the section. */
function rows(spec: Spec, path: string, out: string[]): void {
  if (spec.type === 'object') {
    if (path !== '' && spec.optional) out.push(`| \`${path}\` | object | ${defaultText(spec)} | ${cell(spec.help)} |`);
    for (const [key, field] of Object.entries(spec.fields)) rows(field, path === '' ? key : `${path}.${key}`, out);
    return;
  }
  out.push(`| \`${path}\` | ${cell(typeText(spec))} | ${cell(defaultText(spec))} | ${cell(spec.help)} |`);
  if (spec.type === 'array' && spec.items.type === 'object') {
    for (const [key, field] of Object.entries(spec.items.fields)) rows(field, `${path}[].${key}`, out);
  }
}

export const CONFIG_EXAMPLE = {
  dataDir: '/var/lib/diskless',
  nbd: { port: 10809 },
  http: { port: 8080, publicUrl: 'http://10.0.0.1:8080' },
  dhcp: {
    interfaces: [{
      name: 'enp3s0', mode: 'full', address: '10.0.0.1', subnet: '10.0.0.0/24',
      pool: { start: '10.0.0.100', end: '10.0.0.199' }, router: '10.0.0.1', dns: ['10.0.0.1'],
      reservations: { '52:54:00:12:34:56': '10.0.0.21' },
    }],
  },
  boot: { unknownClients: 'register-script' },
};

export function renderConfigDocs(): string {
  const lines = [
    '# Configuration',
    '',
    `diskless reads one JSON file, \`${DEFAULT_CONFIG_PATH}\` unless \`--config PATH\``,
    'names another. Every option has a default, so the file may be missing or',
    'empty (`{}`): the server then keeps its data in `/var/lib/diskless`,',
    'serves NBD, HTTP and TFTP on their default ports, and no DHCP.',
    '',
    'The file is checked once, when the server starts: every problem is listed',
    'with the path of its option (`nbd.port: must be an integer 0-65535, got "x"`),',
    'an option the schema does not know is an error (a misspelt option is never',
    'ignored quietly), and the server does not start until all are fixed.',
    '`diskless config check [--config PATH]` runs the same check and prints',
    'every problem. Once checked, the configuration is frozen.',
    '',
    'This page is generated from the schema\'s help text in',
    '`src/app/config-schema.ts` by `diskless config docs`; a test fails when it',
    'is out of date.',
    '',
    'An example: full DHCP on one interface, unknown machines shown a',
    'registration script.',
    '',
    '```json',
    JSON.stringify(CONFIG_EXAMPLE, null, 2),
    '```',
    '',
  ];
  const header = ['| option | type | default | meaning |', '| --- | --- | --- | --- |'];
  const top: string[] = [];
  const sections: string[] = [];
  for (const [key, spec] of Object.entries(CONFIG_SCHEMA.fields) as [string, Spec][]) {
    if (spec.type !== 'object') {
      rows(spec, key, top);
      continue;
    }
    const body: string[] = [];
    rows(spec, '', body);
    sections.push(`## \`${key}\``, '', spec.help, '', ...header, ...body.map((r) => r.replace(/^\| `/, `| \`${key}.`)), '');
  }
  if (top.length > 0) lines.push('## Top level', '', ...header, ...top, '');
  lines.push(...sections);
  return lines.join('\n');
}
