// JSON Schema keywords that XGrammar (0.1.27, WebAssembly build) accepts but does not enforce, or
// enforces wrongly: a schema using them would give output that fails the schema, so it is refused with
// a 400 that says where. Found by converting schemas and reading the grammars: "not", "if"/"then"/"else",
// "contains", "dependentRequired", "dependentSchemas", "multipleOf" and "uniqueItems" are dropped; bounds
// on "number" are miscompiled (maximum 1 lets 1.5 through, exclusiveMinimum 0 lets 0 through, 0.5
// becomes "0", any character, "5"), while bounds on "integer" are right; a required property missing
// from "properties" is dropped in strict mode; "allOf" of several schemas is not supported (XGrammar
// only warns). grammar.ts turns the finding into a 400 naming response_format.json_schema.schema.

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

/** What in `schema` XGrammar would not enforce, with where it is (dotted path), or null when nothing. */
export function unsupportedSchemaPart(schema: unknown): string | null {
  try {
    walk(schema, '');
    return null;
  } catch (e) {
    if (e instanceof Unsupported) return e.message;
    throw e;
  }
}

function walk(schema: unknown, at: string): void {
  if (!isObject(schema)) return; // true / false schemas
  const sub = (key: string) => (at === '' ? key : `${at}.${key}`);
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
  for (const key of ONE) if (isObject(schema[key])) walk(schema[key], sub(key));
  for (const key of LIST)
    if (Array.isArray(schema[key])) (schema[key] as unknown[]).forEach((s, i) => walk(s, sub(`${key}.${i}`)));
  for (const key of MAP)
    if (isObject(schema[key]))
      for (const [name, s] of Object.entries(schema[key] as Record<string, unknown>)) walk(s, sub(`${key}.${name}`));
}
