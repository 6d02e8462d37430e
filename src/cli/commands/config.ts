/**
 * `diskless config ...`: checking a configuration file, and the reference
 * of every option; `diskless api token`: the management token.
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadOrCreateApiToken } from '../../api/rest/token.js';
import { checkConfig, DEFAULT_CONFIG_PATH, readConfigFile } from '../../app/config.js';
import { renderConfigDocs } from '../../app/config-docs.js';
import { DATA_HELP, DATA_OPTIONS, dataDir, stringOption, type Command } from '../command.js';
import { EXIT } from '../errors.js';

const configCheck: Command = {
  path: ['config', 'check'],
  usage: 'config check [--config FILE]',
  summary: 'Check a configuration file and print every problem',
  options: { config: { type: 'string' } },
  optionHelp: [['--config FILE', `the file to check (default ${DEFAULT_CONFIG_PATH})`]],
  positionals: { min: 0, max: 0, names: [] },
  json: true,
  async run(ctx) {
    const given = stringOption(ctx, 'config');
    const path = given ? resolve(ctx.io.cwd, given) : DEFAULT_CONFIG_PATH;
    const raw = readConfigFile(path, given !== undefined);
    const { config, problems } = checkConfig(raw ?? {});
    if (ctx.json) {
      ctx.io.out(JSON.stringify({ file: path, exists: raw !== null, ok: problems.length === 0, problems, ...(config ? { config } : {}) }, null, 2));
    } else if (problems.length === 0) {
      ctx.io.out(raw === null ? `${path} does not exist; every default applies` : `${path}: ok`);
    } else {
      ctx.io.err(`${path}: ${problems.length} problem${problems.length === 1 ? '' : 's'}`);
      for (const p of problems) ctx.io.out(p);
    }
    return problems.length === 0 ? EXIT.OK : EXIT.FAILURE;
  },
};

const configDocs: Command = {
  path: ['config', 'docs'],
  usage: 'config docs',
  summary: 'Print the reference of every configuration option (docs/configuration.md)',
  options: {},
  optionHelp: [],
  positionals: { min: 0, max: 0, names: [] },
  async run(ctx) {
    ctx.io.out(renderConfigDocs());
    return EXIT.OK;
  },
};

const apiToken: Command = {
  path: ['api', 'token'],
  usage: 'api token [--data-dir DIR]',
  summary: 'Print the token of the REST API, the dashboard and disk capture (made at first use)',
  help: 'The token is kept in <dataDir>/api-token, mode 0600. Give it as `Authorization: Bearer TOKEN`, on the dashboard\'s log-in page, or to the client kit\'s capture (--token).',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 0, max: 0, names: [] },
  json: true,
  async run(ctx) {
    const dir = dataDir(ctx);
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    const token = loadOrCreateApiToken(dir);
    if (ctx.json) ctx.io.out(JSON.stringify({ token }));
    else ctx.io.out(token);
    return EXIT.OK;
  },
};

export const CONFIG_COMMANDS: readonly Command[] = [configCheck, configDocs, apiToken];
