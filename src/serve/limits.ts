// The server's limits that the command line sets: connection timeouts and counts, adapters in memory.
/** What one connection may take. A client that sends slowly, or not at all, holds its socket until the
 * first of these timeouts, and no client holds more than its share of connections. Node measures the
 * header and request timeouts in wall time, a forward that blocks the event loop included: they are set
 * well above one forward's time (a prompt chunk of --prefill-chunk tokens). */
export interface ConnectionLimits {
  /** The request's headers must arrive within this (slowloris). */
  headersTimeoutMs: number;
  /** The whole request (headers and body) must arrive within this. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** A connection with no traffic either way (a client that stopped reading its stream) is closed after
   * this; not while a request is being answered without streaming (the client waits for the body). */
  idleTimeoutMs: number;
  /** Open connections at most (then new ones are closed at once). */
  maxConnections: number;
  /** Open connections from one address at most. */
  maxConnectionsPerClient: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 60_000,
  keepAliveTimeoutMs: 30_000,
  idleTimeoutMs: 120_000,
  maxConnections: 1024,
  maxConnectionsPerClient: 128,
};

/** Registered adapters in memory at most, by default (pinned ones not counted). */
export const DEFAULT_MAX_LOADED_ADAPTERS = 16;

/** Share of the machine's available memory the KV pool takes by default (at most). */
export const DEFAULT_KV_SHARE = 0.4;

/** Prompts longer than this many tokens are prefilled in chunks of it between decode steps. */
export const DEFAULT_PREFILL_CHUNK = 512;
