// Errors users can act on, and what the CLI (src/cli/main.ts) does with each thrown error:
//  - UserError: `mixlora: <message>` on stderr, exit 1;
//  - UsageError, and commander's own usage errors (unknown command or flag, missing argument): the message
//    and a pointer to --help on stderr, exit 2;
//  - anything else is a bug: `mixlora: <message>` on stderr, exit 1, and the stack trace only when the
//    environment sets MIXLORA_DEBUG.
// So every error a user can reach with their input (a file, a flag, a config field, a tensor) must be a
// UserError whose message names what is wrong and where (file:line, field, tensor).

/** Bad input: a file, field, tensor or value that is wrong. The message names it. */
export class UserError extends Error {
  override name = 'UserError';
}

/** Bad command-line usage (unknown flag, missing argument). */
export class UsageError extends Error {
  override name = 'UsageError';
}
