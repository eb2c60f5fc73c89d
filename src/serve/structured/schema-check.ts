// JSON Schema keywords that XGrammar (0.1.27, WebAssembly build) accepts but does not enforce, or
// enforces wrongly: a schema using them would give output that fails the schema, so it is refused with
// a 400 that says where. Found by converting schemas and reading the grammars: "not", "if"/"then"/"else",
// "contains", "dependentRequired", "dependentSchemas", "multipleOf" and "uniqueItems" are dropped; bounds
// on "number" are miscompiled (maximum 1 lets 1.5 through, exclusiveMinimum 0 lets 0 through, 0.5
// becomes "0", any character, "5"), while bounds on "integer" are right; a required property missing
// from "properties" is dropped in strict mode; "allOf" of several schemas is not supported (XGrammar
// only warns). grammar.ts turns the finding into a 400 naming response_format.json_schema.schema.
//
// Also bounded here, as converting a schema is one synchronous call on the event loop: the schema's
// JSON text (SCHEMA_MAX_BYTES: 8 KiB converts in well under 100 ms, the costliest shape being many
// optional properties) and its nesting (SCHEMA_MAX_DEPTH levels of subschemas: XGrammar's converter
// recurses, and runs out of stack around 60). What compiling the grammar costs is cost.ts's part.

/** Largest schema accepted, in characters of its JSON text. */
export const SCHEMA_MAX_BYTES = 8192;
/** Deepest nesting of subschemas accepted (the top level is 1). */
export const SCHEMA_MAX_DEPTH = 16;

const IGNORED = new Set([
  'not',
  'if',
  'then',
  'else',
  'contains',
  'minContains',
  'maxContains',
  'dependentRequired',
  'dependentSchemas',
  'dependencies',
  'multipleOf',
  'uniqueItems',
]);
const BOUNDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'];
/** Keywords whose value is a schema, a list of schemas, or a map of name -> schema. */
const ONE = [
  'additionalProperties',
  'items',
  'propertyNames',
  'unevaluatedProperties',
  'unevaluatedItems',
  'additionalItems',
];
const LIST = ['items', 'prefixItems', 'anyOf', 'oneOf', 'allOf'];
const MAP = ['properties', 'patternProperties', '$defs', 'definitions'];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

class Unsupported {
  constructor(readonly message: string) {}
}

function refuse(at: string, what: string): never {
  throw new Unsupported(`${what} (${at === '' ? 'at the top level' : `at ${at}`})`);
}

/** What in `schema` XGrammar would not enforce or the bounds refuse, with where it is (dotted path), or
 * null when nothing. */
export function unsupportedSchemaPart(schema: unknown): string | null {
  const size = JSON.stringify(schema).length;
  if (size > SCHEMA_MAX_BYTES)
    return `the schema has ${size} characters of JSON; at most ${SCHEMA_MAX_BYTES} are accepted (converting and compiling it holds up every request)`;
  try {
    walk(schema, '', 1);
    return null;
  } catch (e) {
    if (e instanceof Unsupported) return e.message;
    throw e;
  }
}

function walk(schema: unknown, at: string, depth: number): void {
  if (!isObject(schema)) return; // true / false schemas
  const sub = (key: string) => (at === '' ? key : `${at}.${key}`);
  if (depth > SCHEMA_MAX_DEPTH)
    refuse(at, `subschemas nested more than ${SCHEMA_MAX_DEPTH} levels deep are not supported`);
  for (const key of Object.keys(schema)) if (IGNORED.has(key)) refuse(sub(key), `"${key}" is not supported`);
  const bounds = BOUNDS.filter((k) => Object.hasOwn(schema, k));
  if (bounds.length > 0) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.includes('integer') || !types.every((t) => t === 'integer' || t === 'null'))
      refuse(sub(bounds[0]!), `"${bounds[0]}" is supported only with "type": "integer"`);
  }
  for (const key of ['anyOf', 'oneOf', 'enum'])
    if (Array.isArray(schema[key]) && (schema[key] as unknown[]).length === 0) refuse(sub(key), `"${key}" is empty`);
  if (Array.isArray(schema.allOf) && schema.allOf.length > 1)
    refuse(sub('allOf'), '"allOf" with more than one schema is not supported');
  if (Array.isArray(schema.required)) {
    const props = isObject(schema.properties) ? schema.properties : {};
    for (const name of schema.required)
      if (typeof name === 'string' && !Object.hasOwn(props, name))
        refuse(sub('required'), `required property ${JSON.stringify(name)} is not in "properties"`);
  }
  for (const key of ONE) if (isObject(schema[key])) walk(schema[key], sub(key), depth + 1);
  for (const key of LIST)
    if (Array.isArray(schema[key]))
      (schema[key] as unknown[]).forEach((s, i) => walk(s, sub(`${key}.${i}`), depth + 1));
  for (const key of MAP)
    if (isObject(schema[key]))
      for (const [name, s] of Object.entries(schema[key] as Record<string, unknown>))
        walk(s, sub(`${key}.${name}`), depth + 1);
}

/** A string subschema's keywords that make its grammar costly to compile (bounded lengths, patterns,
 * formats), with where it is. */
export interface StringPart {
  at: string;
  /** The subschema reduced to those keywords (and "type": "string"). */
  schema: Record<string, unknown>;
  /** The keywords, as `name value` (for messages). */
  keywords: string[];
}

const STRING_KEYWORDS = ['maxLength', 'minLength', 'pattern', 'format'];

/** Every subschema with maxLength, minLength, pattern or format, in document order. */
export function stringParts(schema: unknown): StringPart[] {
  const out: StringPart[] = [];
  const visit = (s: unknown, at: string) => {
    if (!isObject(s)) return;
    const sub = (key: string) => (at === '' ? key : `${at}.${key}`);
    const keys = STRING_KEYWORDS.filter((k) => Object.hasOwn(s, k));
    if (keys.length > 0)
      out.push({
        at,
        schema: { type: 'string', ...Object.fromEntries(keys.map((k) => [k, s[k]])) },
        keywords: keys.map((k) => `${k} ${JSON.stringify(s[k])}`),
      });
    for (const key of ONE) if (isObject(s[key])) visit(s[key], sub(key));
    for (const key of LIST)
      if (Array.isArray(s[key])) (s[key] as unknown[]).forEach((x, i) => visit(x, sub(`${key}.${i}`)));
    for (const key of MAP)
      if (isObject(s[key]))
        for (const [name, x] of Object.entries(s[key] as Record<string, unknown>)) visit(x, sub(`${key}.${name}`));
  };
  visit(schema, '');
  return out;
}
