// Errors users can act on. The CLI prints their message alone and exits 1 (bad input) or 2 (bad usage);
// anything else is a bug and is printed with its stack.

/** Bad input: a file, field, tensor or value that is wrong. The message names it. */
export class UserError extends Error {
  override name = 'UserError';
}

/** Bad command-line usage (unknown flag, missing argument). */
export class UsageError extends Error {
  override name = 'UsageError';
}
