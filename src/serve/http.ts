// The HTTP stack every mixlora server stands on (`serve`, `studio`): fastify with schema validation (no type
// coercion), a body limit, connection limits and timeouts, the API key check, OpenAI-style error bodies and
// GET /health. The routes are the caller's.
import { timingSafeEqual, createHash } from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import { ApiError, errorBody } from './errors.js';
import { DEFAULT_LIMITS, type ConnectionLimits } from './limits.js';
import { describeValidation } from './validation.js';
import { CONNECTION_CHECK_MS, connectionsWithinFileLimit, limitConnections } from './connections.js';

export interface HttpOptions {
  /** Every route but /health (and `publicPaths`) needs `Authorization: Bearer KEY`; null: no key. */
  apiKey: string | null;
  /** Largest request body in bytes. */
  bodyLimit: number;
  /** Connection limits and timeouts (DEFAULT_LIMITS where absent). */
  limits?: Partial<ConnectionLimits>;
  /** Where else a request may carry the key (a browser's cookie); the bearer header is always read. */
  credential?: (req: FastifyRequest) => string | null;
  /** Paths (without the query) answered without the key besides /health. */
  publicPaths?: string[];
  /** Answers a request that lacks the key instead of the 401 error body (e.g. a login page); null: the 401. */
  unauthorized?: (req: FastifyRequest, given: string | null) => { status: number; type: string; body: string } | null;
  log?: (line: string) => void;
}

export interface HttpApp {
  app: FastifyInstance;
  /** The limits in force (maxConnections lowered to what the open-file limit allows). */
  limits: ConnectionLimits;
  /** Whether `given` is the API key (always true without one). */
  keyMatches(given: string | null): boolean;
}

export function createHttpApp(o: HttpOptions): HttpApp {
  const limits: ConnectionLimits = { ...DEFAULT_LIMITS, ...o.limits };
  const connections = connectionsWithinFileLimit(limits.maxConnections);
  if (connections < limits.maxConnections) {
    o.log?.(
      `at most ${connections} connections: the open-file limit (ulimit -n) leaves no room for ${limits.maxConnections}`,
    );
    limits.maxConnections = connections;
  }
  const app = Fastify({
    bodyLimit: o.bodyLimit,
    // A wrong type is an error to report, not a value to convert; `verbose` keeps each failed
    // alternative's schema, so an error can say what a field may be.
    ajv: { customOptions: { coerceTypes: false, allErrors: false, verbose: true } },
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionTimeout: limits.idleTimeoutMs,
    http: { connectionsCheckingInterval: CONNECTION_CHECK_MS },
  });
  limitConnections(app, limits);

  const keyDigest = o.apiKey === null ? null : createHash('sha256').update(o.apiKey).digest();
  // Digests compare in constant time whatever the lengths.
  const keyMatches = (given: string | null) =>
    keyDigest === null || (given !== null && timingSafeEqual(createHash('sha256').update(given).digest(), keyDigest));
  const open = new Set(['/health', ...(o.publicPaths ?? [])]);
  app.addHook('onRequest', async (req, reply) => {
    if (keyDigest === null || open.has(req.url.split('?')[0]!)) return;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    const given = /^bearer +(.+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? o.credential?.(req) ?? null;
    if (keyMatches(given)) return;
    const page = o.unauthorized?.(req, given) ?? null;
    if (page) return reply.code(page.status).type(page.type).send(page.body);
    throw new ApiError(
      401,
      given === null ? 'missing API key (Authorization: Bearer KEY)' : 'incorrect API key',
      'authentication_error',
      null,
      'invalid_api_key',
    );
  });

  app.setErrorHandler((err: FastifyError | ApiError, _req, reply) => {
    if (err instanceof ApiError) return reply.code(err.status).headers(err.headers).send(err.body);
    if (err.validation && err.validation.length > 0) {
      const { message, field } = describeValidation(err.validation);
      return reply.code(400).send(errorBody(message, 'invalid_request_error', field || null, 'invalid_value'));
    }
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
      return reply
        .code(413)
        .send(
          errorBody(
            `request body is larger than ${o.bodyLimit} bytes`,
            'invalid_request_error',
            null,
            'body_too_large',
          ),
        );
    if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY')
      return reply
        .code(400)
        .send(
          errorBody(
            `the request body is not valid JSON (${err.message})`,
            'invalid_request_error',
            'body',
            'invalid_json',
          ),
        );
    const status = err.statusCode ?? 500;
    if (status >= 400 && status < 500)
      return reply.code(status).send(errorBody(err.message, 'invalid_request_error', null, err.code ?? null));
    o.log?.(`error: ${err.stack ?? err.message}`);
    return reply.code(500).send(errorBody(`internal error: ${err.message}`, 'server_error'));
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send(errorBody(`no route ${req.method} ${req.url}`, 'not_found_error', null, 'unknown_route')),
  );
  app.get('/health', async () => ({ status: 'ok' }));
  return { app, limits, keyMatches };
}
