/**
 * How the REST API checks params, query strings and bodies against their
 * JSON Schemas, and words a refusal.
 *
 * fastify's default validator is built for lenient forms: it coerces types
 * (`"5"` passes as 5, `"true"` as true) and silently drops properties that
 * `additionalProperties: false` forbids. An API whose refusals must name the
 * wrong field cannot use that for bodies, so the API's routes compile their
 * schemas with Ajv instances of their own:
 *   - bodies: no coercion, no removal, no defaults: JSON types are exact and
 *     an unknown field is an error that names it;
 *   - params and query strings: text by nature, so types are coerced
 *     (`?limit=10` is the integer 10, `?limit=ten` is refused) and defaults
 *     filled in; unknown query parameters are still refused.
 * Ajv stops at the first error (allErrors would let a crafted body make it
 * do work in proportion to its size).
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { RestError } from './errors.js';
import type { JsonSchema } from './schemas.js';

const common = { allErrors: false, allowUnionTypes: true, strict: true, verbose: true } as const;
const bodyAjv = new Ajv({ ...common, coerceTypes: false, useDefaults: false, removeAdditional: false });
const textAjv = new Ajv({ ...common, coerceTypes: true, useDefaults: true, removeAdditional: false });

/** Where a value came from, as fastify names it and as a message names it. */
const PART_NAMES: Record<string, string> = { body: 'body', querystring: 'query', params: 'params', headers: 'headers' };

export type Validator = (data: unknown) => true | { error: RestError };

/**
 * A validator for one part of one route, in the form fastify's
 * validatorCompiler returns. `bodyRequired: false` lets a request without a
 * body through (fastify passes null then).
 */
export function compileValidator(schema: JsonSchema, httpPart: string, bodyRequired = true): Validator {
  const part = PART_NAMES[httpPart] ?? httpPart;
  const validate: ValidateFunction = (httpPart === 'body' ? bodyAjv : textAjv).compile(schema);
  return (data) => {
    if (httpPart === 'body' && data === null && !bodyRequired) return true;
    if (httpPart === 'body' && data === null) return { error: new RestError('API_INVALID_REQUEST', 'body: a JSON object is required (Content-Type: application/json)') };
    if (validate(data)) return true;
    return { error: new RestError('API_INVALID_REQUEST', describe(part, validate.errors?.[0])) };
  };
}

/** One Ajv error as a sentence that names the field: `body.quotaBytes must be >= 1`. */
export function describe(part: string, e: ErrorObject | undefined): string {
  if (!e) return `${part} is not valid`;
  const path = part + e.instancePath.split('/').slice(1).map((s) => (/^\d+$/.test(s) ? `[${s}]` : `.${s.replace(/~1/g, '/').replace(/~0/g, '~')}`)).join('');
  const hint = typeof e.parentSchema?.description === 'string' ? `: ${e.parentSchema.description}` : '';
  const shown = (v: unknown): string => {
    const text = JSON.stringify(v) ?? String(v);
    return text.length > 60 ? `${text.slice(0, 57)}...` : text;
  };
  switch (e.keyword) {
    case 'additionalProperties':
      return `${path}.${String(e.params.additionalProperty)} is not a known field${path === part ? '' : ` of ${path}`}`;
    case 'required':
      return `${path}.${String(e.params.missingProperty)} is required`;
    case 'minProperties':
      return `${path} must name at least ${String(e.params.limit)} field${e.params.limit === 1 ? '' : 's'} to change`;
    case 'type':
      return `${path} must be ${String(e.params.type).replace(/,/g, ' or ')}, got ${shown(e.data)}${hint}`;
    case 'enum':
      return `${path} must be one of ${(e.params.allowedValues as unknown[]).map((v) => String(v)).join(', ')}, got ${shown(e.data)}`;
    case 'pattern':
    case 'maxLength':
    case 'minLength':
      return `${path} ${shown(e.data)} is not valid${hint}`;
    case 'minimum':
    case 'maximum':
      return `${path} must be ${e.keyword === 'minimum' ? '>=' : '<='} ${String(e.params.limit)}, got ${shown(e.data)}${hint}`;
    default:
      return `${path} ${e.message ?? 'is not valid'}${hint}`;
  }
}
