// Connection limits of the HTTP server: headers must arrive in time (a slowloris client is cut off within
// a second of its deadline: Node checks every connectionsCheckingInterval), at most so many connections
// in all and from one address (connections past either are closed at once), so one client cannot take
// the sockets (or the open files) that the others and /health need.
import fs from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { ConnectionLimits } from './limits.js';

/** How often Node looks for requests past their headers or request timeout (its default is 30 s). */
export const CONNECTION_CHECK_MS = 1000;

export function limitConnections(app: FastifyInstance, limits: ConnectionLimits): void {
  const server = app.server;
  server.headersTimeout = limits.headersTimeoutMs;
  server.maxConnections = limits.maxConnections;
  const perClient = new Map<string, number>();
  server.on('connection', (socket) => {
    const who = socket.remoteAddress ?? '';
    const open = (perClient.get(who) ?? 0) + 1;
    if (open > limits.maxConnectionsPerClient) {
      socket.destroy();
      return;
    }
    perClient.set(who, open);
    socket.once('close', () => {
      const left = (perClient.get(who) ?? 1) - 1;
      if (left > 0) perClient.set(who, left);
      else perClient.delete(who);
    });
  });
}

/** Open files the process keeps for itself (model files, the template renderer, logs) besides sockets. */
const RESERVED_FILES = 64;

/** `wanted` connections, or fewer when the open-file limit (Linux: /proc/self/limits) could not hold them
 * besides the files the process needs: past the limit, accept() fails for everyone, /health included. */
export function connectionsWithinFileLimit(wanted: number): number {
  let limit: number | null = null;
  try {
    const m = /^Max open files\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    limit = m ? Number(m[1]) : null;
  } catch {
    limit = null;
  }
  return limit === null ? wanted : Math.max(1, Math.min(wanted, limit - RESERVED_FILES));
}
