// XGrammar's WebAssembly build (@mlc-ai/web-xgrammar) loaded in Node. The package ships a UMD bundle
// with the .wasm inlined as base64 under "type": "module", so Node can neither import it (no exports
// in an ES module scope) nor require it: we evaluate its text as CommonJS, with one line added that
// hands out the Emscripten module factory. Each instance made with the factory has its own memory;
// we call its Embind classes directly: after instantiation every call is synchronous (the package's
// wrapper makes them async) and every object it makes is freed by us.
//
// XGrammar's checks end in abort() in this build (no C++ exceptions): the call throws a
// WebAssembly.RuntimeError and the instance may be left inconsistent (a lock held, a leaked object),
// so an instance that aborted is marked broken and never used for new work; the "[FATAL] file:line:"
// line it printed just before becomes the error message.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';

/** An Embind object: freed with delete(). */
export interface EmbindObject {
  delete(): void;
}
export interface VectorInt extends EmbindObject {
  size(): number;
}
export type VectorString = EmbindObject;
export type XTokenizerInfo = EmbindObject;
export type XGrammar = EmbindObject & { ToString(): string };
export type XCompiledGrammar = EmbindObject;
export interface XGrammarCompiler extends EmbindObject {
  CompileGrammar(grammar: XGrammar): XCompiledGrammar;
}
export interface XGrammarMatcher extends EmbindObject {
  AcceptToken(id: number, verbose: boolean): boolean;
  GetNextTokenBitmask(vocabSize: number): VectorInt;
  IsTerminated(): boolean;
}

/** The part of the Embind module that we use (names as web-xgrammar's bindings define them). */
export interface XgrammarBinding {
  HEAPU8: Uint8Array;
  vecStringFromJSArray(values: string[]): VectorString;
  vecIntFromJSArray(values: number[]): VectorInt;
  vecIntToView(v: VectorInt): Int32Array;
  JSONFormat: { kJSON: unknown };
  _JSONSchemaToEBNF(
    schema: string,
    anyWhitespace: boolean,
    indent: number | undefined,
    separators: { first: string; second: string } | undefined,
    strictMode: boolean,
    maxWhitespaceCnt: number | undefined,
    format: unknown,
  ): string;
  Grammar: { FromEBNF(ebnf: string, rootRule: string): XGrammar };
  TokenizerInfo: new (
    vocab: VectorString,
    vocabType: string,
    vocabSize: number,
    stopIds: VectorInt,
    addPrefixSpace: boolean,
  ) => XTokenizerInfo;
  GrammarCompiler: new (info: XTokenizerInfo, maxThreads: number, cacheEnabled: boolean) => XGrammarCompiler;
  GrammarMatcher: new (
    compiled: XCompiledGrammar,
    overrideStopTokens: VectorInt | undefined,
    terminateWithoutStopToken: boolean,
    maxRollbackTokens: number,
  ) => XGrammarMatcher;
}

type Factory = (moduleArg: { print: (s: string) => void; printErr: (s: string) => void }) => Promise<XgrammarBinding>;

const PACKAGE = '@mlc-ai/web-xgrammar';
const EXPORT_LINE = 'exports.default = index;';
let factory: Factory | null = null;

function loadFactory(): Factory {
  if (factory) return factory;
  const file = createRequire(import.meta.url).resolve(PACKAGE);
  const source = fs.readFileSync(file, 'utf8');
  if (source.split(EXPORT_LINE).length !== 2)
    throw new Error(`${file}: not the ${PACKAGE} build this loader knows (no single "${EXPORT_LINE}")`);
  const patched = source.replace(EXPORT_LINE, `${EXPORT_LINE} exports.__createModule = Module;`);
  // The bundle's own CommonJS branch runs: the arguments are the CommonJS module scope it expects.
  const run = new Function('exports', 'require', 'module', '__filename', '__dirname', patched);
  const mod = { exports: {} as { __createModule?: Factory } };
  run(mod.exports, createRequire(file), mod, file, path.dirname(file));
  if (typeof mod.exports.__createModule !== 'function') throw new Error(`${file}: no Emscripten module factory`);
  factory = mod.exports.__createModule;
  return factory;
}

/** What a WebAssembly trap or an Emscripten abort() throws (the lib settings here have no WebAssembly types). */
const WasmRuntimeError = (globalThis as unknown as { WebAssembly: { RuntimeError: new () => Error } }).WebAssembly
  .RuntimeError;

/** Raised when XGrammar refused its input (it aborted); `message` is XGrammar's own reason. */
export class GrammarEngineError extends Error {
  override name = 'GrammarEngineError';
}

/** One instance of the WebAssembly module. */
export class WasmInstance {
  /** Set once a call aborted: the instance takes no new work, and its objects are abandoned, not freed. */
  broken = false;
  private printed: string[] = [];

  private constructor(readonly binding: XgrammarBinding) {}

  static async create(): Promise<WasmInstance> {
    let instance: WasmInstance | null = null;
    const log = (s: string) => {
      const lines = instance?.printed;
      if (lines) {
        lines.push(s);
        if (lines.length > 20) lines.shift();
      }
    };
    instance = new WasmInstance(await loadFactory()({ print: log, printErr: log }));
    return instance;
  }

  /** Runs `f` on the binding; an abort marks the instance broken and becomes a GrammarEngineError. */
  call<T>(f: (b: XgrammarBinding) => T): T {
    if (this.broken) throw new Error('internal error: the grammar engine instance is broken (an earlier call aborted)');
    this.printed.length = 0;
    try {
      return f(this.binding);
    } catch (e) {
      if (!(e instanceof WasmRuntimeError)) throw e;
      this.broken = true;
      throw new GrammarEngineError(fatalMessage(this.printed) ?? e.message);
    }
  }

  /** XGrammar's warnings during the last call ("[WARNING] path:line: " left out). */
  warnings(): string[] {
    return this.printed
      .filter((l) => l.startsWith('[WARNING]'))
      .map((l) => l.replace(/^\[WARNING\]\s+\S+:\d+:\s*/, ''));
  }
}

/** The reason in XGrammar's last "[FATAL] path:line: reason" line, without "Check failed: (...) is false: ". */
function fatalMessage(lines: string[]): string | null {
  const fatal = lines.filter((l) => l.startsWith('[FATAL]')).pop();
  if (!fatal) return null;
  return fatal
    .replace(/^\[FATAL\]\s+\S+:\d+:\s*/, '')
    .replace(/^Check failed: .*? is false:\s*/, '')
    .trim();
}

/** Holds one instance, made on first use and made anew after it broke. */
class Slot {
  private pending: Promise<WasmInstance> | null = null;
  private current: WasmInstance | null = null;

  get(): Promise<WasmInstance> {
    if (this.pending && !this.current?.broken) return this.pending;
    this.current = null;
    const made = WasmInstance.create().then((instance) => (this.current = instance));
    made.catch(() => {
      if (this.pending === made) this.pending = null;
    });
    this.pending = made;
    return made;
  }
}

const main = new Slot();
const checker = new Slot();

/** The instance that holds vocabularies, compiled grammars and matchers (replaced if it ever aborts). */
export function mainInstance(): Promise<WasmInstance> {
  return main.get();
}

/** A second instance that turns users' JSON schemas into grammars, so that a schema that makes XGrammar
 * abort only costs this instance (it is replaced), never the one that serves running requests. */
export function checkerInstance(): Promise<WasmInstance> {
  return checker.get();
}

/** Objects of the grammar engine alive now (made and not yet freed), for leak checks. */
export const liveObjects = { vocabularies: 0, grammars: 0, matchers: 0 };

let queue: Promise<unknown> = Promise.resolve();

/** Runs `f`, a long synchronous piece of grammar work (converting a schema, building a vocabulary,
 * compiling a grammar), after the pieces queued before it and a turn of the event loop after the last one
 * ended: whatever requests bring, the serving loop runs a decode step between any two pieces, and no
 * piece waits longer than those before it. */
export function serially<T>(f: () => T | Promise<T>): Promise<T> {
  const run = queue.then(async () => {
    await nextTurn();
    return f();
  });
  queue = run.catch(() => undefined);
  return run;
}
