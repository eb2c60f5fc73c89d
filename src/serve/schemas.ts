// JSON schemas of the request bodies (validated by fastify's Ajv, types not coerced), after OpenAI's
// API reference for /v1/completions and /v1/chat/completions. Unknown fields are ignored.
const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: 'null' }] });

const sampling = {
  model: { type: 'string', minLength: 1 },
  max_tokens: nullable({ type: 'integer', minimum: 1 }),
  temperature: nullable({ type: 'number', minimum: 0, maximum: 2 }),
  top_p: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 1 }),
  top_k: nullable({ type: 'integer', minimum: -1 }),
  seed: nullable({ type: 'integer' }),
  stop: nullable({
    anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 4 }],
  }),
  n: nullable({ type: 'integer', minimum: 1, maximum: 16 }),
  stream: nullable({ type: 'boolean' }),
  stream_options: nullable({ type: 'object', properties: { include_usage: { type: 'boolean' } } }),
  frequency_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  presence_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  // OpenAI's logit_bias: token id (as a string key) -> bias added to its logit.
  logit_bias: nullable({
    type: 'object',
    propertyNames: { pattern: '^(0|[1-9][0-9]{0,8})$' },
    additionalProperties: { type: 'number', minimum: -100, maximum: 100 },
    maxProperties: 1024,
  }),
  // vLLM's extra sampling fields.
  stop_token_ids: nullable({ type: 'array', items: { type: 'integer', minimum: 0 }, maxItems: 64 }),
  min_tokens: nullable({ type: 'integer', minimum: 0 }),
  repetition_penalty: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 100 }),
  ignore_eos: nullable({ type: 'boolean' }),
  user: { type: 'string' },
  // Checked field by field by the structured output module (400s name the field, unknown ones too).
  response_format: nullable({ type: 'object' }),
} as const;

const tokenIds = { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 1 };

export const completionBody = {
  type: 'object',
  required: ['model', 'prompt'],
  properties: {
    ...sampling,
    // 0 only with echo: the prompt is scored, nothing generated.
    max_tokens: nullable({ type: 'integer', minimum: 0 }),
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 64 },
        tokenIds,
        { type: 'array', items: tokenIds, minItems: 1, maxItems: 64 },
      ],
    },
    echo: nullable({ type: 'boolean' }),
    // vLLM's default bound (max_logprobs 20); OpenAI's is 5.
    logprobs: nullable({ type: 'integer', minimum: 0, maximum: 20 }),
  },
} as const;

const textPart = {
  type: 'object',
  required: ['type', 'text'],
  properties: { type: { const: 'text' }, text: { type: 'string' } },
};

export const chatBody = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    ...sampling,
    max_completion_tokens: nullable({ type: 'integer', minimum: 1 }),
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { enum: ['system', 'developer', 'user', 'assistant'] },
          content: nullable({ anyOf: [{ type: 'string' }, { type: 'array', items: textPart }] }),
          name: { type: 'string' },
        },
      },
    },
    logprobs: nullable({ type: 'boolean' }),
    top_logprobs: nullable({ type: 'integer', minimum: 0, maximum: 20 }),
  },
} as const;

export const adapterBody = {
  type: 'object',
  required: ['name', 'path'],
  properties: { name: { type: 'string', minLength: 1 }, path: { type: 'string', minLength: 1 } },
} as const;

// vLLM's adapter routes (lora_int_id, which vLLM also accepts, names nothing here: the name is the key).
export const loadLoraBody = {
  type: 'object',
  required: ['lora_name', 'lora_path'],
  properties: {
    lora_name: { type: 'string', minLength: 1 },
    lora_path: { type: 'string', minLength: 1 },
    load_inplace: { type: 'boolean' },
  },
} as const;

export const unloadLoraBody = {
  type: 'object',
  required: ['lora_name'],
  properties: { lora_name: { type: 'string', minLength: 1 }, lora_int_id: { type: 'integer' } },
} as const;

export interface SamplingFields {
  model: string;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  stop_token_ids?: number[] | null;
  min_tokens?: number | null;
  repetition_penalty?: number | null;
  ignore_eos?: boolean | null;
  /** OpenAI's response_format: {"type": "text" | "json_object" | "json_schema", ...} (structured/). */
  response_format?: unknown;
}

export interface CompletionRequest extends SamplingFields {
  prompt: string | string[] | number[] | number[][];
  echo?: boolean | null;
  logprobs?: number | null;
}

export interface ChatMessageIn {
  role: string;
  content?: string | { type: 'text'; text: string }[] | null;
}

export interface ChatRequest extends SamplingFields {
  messages: ChatMessageIn[];
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
}
