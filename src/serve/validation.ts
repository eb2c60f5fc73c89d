// One message for a request body that failed its JSON schema, naming the field. Where a field may take
// several shapes (anyOf: a string, a list of strings, token ids...), the error of the shape the value has
// is the one reported ("must NOT have more than 4 items"), and when it has none of them, the shapes it may
// take ("must be a string, an array of strings or an array of integers"), not the first alternative's.
import type { FastifySchemaValidationError } from 'fastify/types/schema.js';

type SchemaNode = Record<string, unknown>;

/** A JSON schema alternative in words ("a string", "an array of integers", "null"). */
function shape(s: SchemaNode): string {
  if (Array.isArray(s.anyOf)) return (s.anyOf as SchemaNode[]).map(shape).join(', ');
  if ('const' in s) return JSON.stringify(s.const);
  switch (s.type) {
    case 'array':
      return `an array${s.items ? ` of ${plural(shape(s.items as SchemaNode))}` : ''}`;
    case 'object':
      return 'an object';
    case 'integer':
      return 'an integer';
    case 'null':
      return 'null';
    case undefined:
      return 'a value';
    default:
      return `a ${String(s.type)}`;
  }
}

function plural(one: string): string {
  return one.replace(/^an? (\w+)/, (_, w: string) => `${w}s`);
}

function fieldOf(v: FastifySchemaValidationError): string {
  const missing = (v.params as { missingProperty?: string }).missingProperty;
  const at = v.instancePath.replace(/^\//, '').replaceAll('/', '.');
  return missing ? (at ? `${at}.${missing}` : missing) : at;
}

export function describeValidation(errors: FastifySchemaValidationError[]): { message: string; field: string } {
  // An error that is not about the value's type comes from the alternative whose type the value has.
  const typeLike = new Set(['type', 'anyOf', 'oneOf', 'const', 'enum']);
  const specific = errors.find((v) => !typeLike.has(v.keyword));
  if (specific) {
    const field = fieldOf(specific);
    const missing = (specific.params as { missingProperty?: string }).missingProperty;
    return { field, message: missing ? `'${field}' is required` : `'${field}' ${specific.message ?? 'is invalid'}` };
  }
  const anyOf = errors.find((v) => v.keyword === 'anyOf');
  const first = errors[0]!;
  if (anyOf) {
    const field = fieldOf(anyOf);
    const alternatives = ((anyOf as unknown as { schema?: SchemaNode[] }).schema ?? []).map(shape);
    if (alternatives.length > 0) {
      const list =
        alternatives.length === 1
          ? alternatives[0]!
          : `${alternatives.slice(0, -1).join(', ')} or ${alternatives[alternatives.length - 1]}`;
      return { field, message: `'${field}' must be ${list}` };
    }
  }
  const field = fieldOf(first);
  return { field, message: `'${field}' ${first.message ?? 'is invalid'}` };
}
