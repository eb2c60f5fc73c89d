// Text <-> token ids: tokenizer.json through @huggingface/tokenizers, tokenizer_config.json for the
// special tokens and add_bos_token, and the chat template rendered with @huggingface/jinja.
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { UserError } from '../util/errors.js';
import { readJsonObject } from '../util/files.js';
import { readLlama2cTokenizer } from './llama2c.js';
import { readSentencePieceModel } from './sentencepiece.js';
import { renderTemplate, renderTemplateAsync } from './template-render.js';
import { spmToTokenizerJson } from './spm.js';
import { withWordSplit } from './word-split.js';

/** One message of a conversation, as chat templates take them. */
export interface ChatMessage {
  /** `system`, `user` or `assistant` (whatever roles the model's chat template knows). */
  role: string;
  /** The message's text. */
  content: string;
}

function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string')
    return (v as { content: string }).content;
  return null;
}

export class TextTokenizer {
  private readonly tok: Tokenizer;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly vocabSize: number;
  /** From tokenizer_config.json; null when it does not say (then tokenizer.json's post-processor decides). */
  private readonly addBos: boolean | null;
  private readonly addEos: boolean;
  private readonly chatTemplate: string | null;

  constructor(
    readonly tokenizerJson: object,
    readonly config: Record<string, unknown>,
    readonly source: string,
  ) {
    try {
      this.tok = new Tokenizer(withWordSplit(tokenizerJson), config);
    } catch (e) {
      throw new UserError(`${source}: cannot build the tokenizer (${(e as Error).message})`);
    }
    const id = (key: string) => {
      const content = tokenContent(config[key]);
      return content === null ? null : (this.tok.token_to_id(content) ?? null);
    };
    this.bosId = id('bos_token');
    this.eosId = id('eos_token');
    this.padId = id('pad_token');
    this.addBos = typeof config.add_bos_token === 'boolean' ? config.add_bos_token : null;
    this.addEos = config.add_eos_token === true;
    this.vocabSize = this.tok.get_vocab(true).size;
    const tpl = config.chat_template;
    if (typeof tpl === 'string') this.chatTemplate = tpl;
    else if (Array.isArray(tpl))
      this.chatTemplate = (tpl.find((t) => t?.name === 'default')?.template as string | undefined) ?? null;
    else this.chatTemplate = null;
  }

  /** Token ids of text; with `special` (default), BOS/EOS as the tokenizer's config says. */
  encode(text: string, opts: { special?: boolean } = {}): number[] {
    const special = opts.special ?? true;
    if (this.addBos === null)
      return text === '' && !special ? [] : this.tok.encode(text, { add_special_tokens: special }).ids;
    const ids = text === '' ? [] : this.tok.encode(text, { add_special_tokens: false }).ids;
    if (special && this.addBos && this.bosId !== null) ids.unshift(this.bosId);
    if (special && this.addEos && this.eosId !== null) ids.push(this.eosId);
    return ids;
  }

  decode(ids: number[], opts: { skipSpecial?: boolean } = {}): string {
    return this.tok.decode(ids, { skip_special_tokens: opts.skipSpecial ?? true });
  }

  /** The text `newIds` add after `promptIds` (decoding the continuation alone can lose a leading space). */
  decodeContinuation(promptIds: number[], newIds: number[]): string {
    const before = this.decode(promptIds);
    const all = this.decode([...promptIds, ...newIds]);
    return all.startsWith(before) ? all.slice(before.length) : this.decode(newIds);
  }

  tokenToId(token: string): number | null {
    return this.tok.token_to_id(token) ?? null;
  }
  idToToken(id: number): string | null {
    return this.tok.id_to_token(id) ?? null;
  }

  private longestToken: number | null = null;
  /** Characters of the longest vocabulary token (at least 1): n tokens never cover more than
   * n × this many characters. */
  get maxTokenChars(): number {
    if (this.longestToken === null) {
      let m = 1;
      for (const t of this.tok.get_vocab(true).keys()) m = Math.max(m, t.length);
      this.longestToken = m;
    }
    return this.longestToken;
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplate !== null;
  }

  /** Renders messages with the tokenizer's chat template (as transformers' apply_chat_template); waits
   * for it (up to the template limits: template-render.ts). */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    const { template, context, where } = this.chatJob(messages, opts);
    return renderTemplate(template, context, where);
  }

  /** applyChatTemplate without blocking the event loop (the server): the same limits and errors. */
  applyChatTemplateAsync(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): Promise<string> {
    try {
      const { template, context, where } = this.chatJob(messages, opts);
      return renderTemplateAsync(template, context, where);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private chatJob(
    messages: ChatMessage[],
    opts: { addGenerationPrompt?: boolean },
  ): { template: string; context: Record<string, unknown>; where: string } {
    if (this.chatTemplate === null) throw new UserError(`${this.source}: the tokenizer has no chat_template`);
    return {
      template: this.chatTemplate,
      context: {
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? false,
        bos_token: tokenContent(this.config.bos_token) ?? '',
        eos_token: tokenContent(this.config.eos_token) ?? '',
      },
      where: `${this.source}: chat_template (tokenizer_config.json)`,
    };
  }

  // ---- loading ---------------------------------------------------------------------------------

  /** From a Hugging Face folder: tokenizer.json (or a SentencePiece tokenizer.model) and tokenizer_config.json. */
  static fromDir(dir: string): TextTokenizer {
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const config = fs.existsSync(cfgFile) ? readJsonObject(cfgFile) : {};
    const json = path.join(dir, 'tokenizer.json');
    if (fs.existsSync(json)) return new TextTokenizer(readJsonObject(json), config, json);
    const model = path.join(dir, 'tokenizer.model');
    if (fs.existsSync(model)) return TextTokenizer.fromSentencePiece(model, config);
    throw new UserError(`${dir}: no tokenizer.json or tokenizer.model`);
  }

  static fromSentencePiece(file: string, config: Record<string, unknown> = {}): TextTokenizer {
    const { pieces, specials } = readSentencePieceModel(file);
    const built = spmToTokenizerJson(pieces, specials);
    return new TextTokenizer(built.tokenizer, { ...built.config, ...config }, file);
  }

  static fromLlama2c(file: string, vocabSize: number): TextTokenizer {
    const built = spmToTokenizerJson(readLlama2cTokenizer(file, vocabSize), { unk: 0, bos: 1, eos: 2 });
    return new TextTokenizer(built.tokenizer, built.config as Record<string, unknown>, file);
  }
}
