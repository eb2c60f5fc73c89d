// OpenAI's `response_format`: {"type": "text"}, {"type": "json_object"} or {"type": "json_schema",
// "json_schema": {"name", "schema", "strict", "description"}}. Checks its shape only; whether XGrammar
// can compile the schema is grammar.ts's part. Errors are 400s naming the field.
import { badRequest } from '../errors.js';

export interface JsonSchemaFormat {
  name: string;
  /** The JSON Schema (an object), as the request gave it. */
  schema: Record<string, unknown>;
  strict: boolean | null;
  description: string | null;
}

export type ResponseFormat =
  { type: 'text' } | { type: 'json_object' } | { type: 'json_schema'; json_schema: JsonSchemaFormat };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** OpenAI's rule for json_schema.name. */
const NAME = /^[A-Za-z0-9_-]{1,64}$/;

function onlyFields(value: Record<string, unknown>, allowed: string[], param: string, what: string): void {
  for (const key of Object.keys(value))
    if (!allowed.includes(key))
      throw badRequest(
        `${param}.${key}: unknown field for ${what} (allowed: ${allowed.join(', ')})`,
        `${param}.${key}`,
        'unknown_parameter',
      );
}

/** The request's response_format, checked; null when absent (null or undefined). `param` names the
 * field in error messages. */
export function parseResponseFormat(value: unknown, param = 'response_format'): ResponseFormat | null {
  if (value === undefined || value === null) return null;
  if (!isObject(value)) throw badRequest(`${param} must be an object`, param);
  const type = value.type;
  if (type === undefined) throw badRequest(`${param}.type is required`, `${param}.type`);
  if (type === 'text' || type === 'json_object') {
    onlyFields(value, ['type'], param, `type "${type}"`);
    return { type };
  }
  if (type !== 'json_schema')
    throw badRequest(
      `${param}.type must be one of "text", "json_object", "json_schema" (got ${JSON.stringify(type)})`,
      `${param}.type`,
    );
  onlyFields(value, ['type', 'json_schema'], param, 'type "json_schema"');
  const p = `${param}.json_schema`;
  const js = value.json_schema;
  if (js === undefined) throw badRequest(`${p} is required when ${param}.type is "json_schema"`, p);
  if (!isObject(js)) throw badRequest(`${p} must be an object`, p);
  onlyFields(js, ['name', 'schema', 'strict', 'description'], p, p);
  if (js.name === undefined) throw badRequest(`${p}.name is required`, `${p}.name`);
  if (typeof js.name !== 'string' || !NAME.test(js.name))
    throw badRequest(`${p}.name must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -`, `${p}.name`);
  if (js.schema === undefined) throw badRequest(`${p}.schema is required`, `${p}.schema`);
  if (!isObject(js.schema)) throw badRequest(`${p}.schema must be a JSON Schema object`, `${p}.schema`);
  if (js.strict !== undefined && js.strict !== null && typeof js.strict !== 'boolean')
    throw badRequest(`${p}.strict must be a boolean`, `${p}.strict`);
  if (js.description !== undefined && js.description !== null && typeof js.description !== 'string')
    throw badRequest(`${p}.description must be a string`, `${p}.description`);
  return {
    type: 'json_schema',
    json_schema: {
      name: js.name,
      schema: js.schema,
      strict: (js.strict as boolean | null | undefined) ?? null,
      description: (js.description as string | null | undefined) ?? null,
    },
  };
}
