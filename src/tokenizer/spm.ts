// SentencePiece BPE vocabularies (llama2.c tok*.bin, tokenizer.model) turned into the tokenizer.json
// that Hugging Face's converter writes for LLaMA (legacy layout): BPE with byte fallback, merges
// ranked by the score of the merged piece, "▁" for spaces, a dummy prefix.

export type PieceType = 'normal' | 'unknown' | 'control' | 'byte' | 'user' | 'unused';
export interface Piece {
  piece: string;
  score: number;
  type: PieceType;
}

/** Merges as Hugging Face's SentencePieceExtractor derives them: every split of a piece into two
 * pieces of the vocabulary, ordered by the merged piece's score (best first), ties by the ids. */
export function deriveMerges(pieces: Piece[]): [string, string][] {
  const vocab = new Map<string, number>();
  pieces.forEach((p, i) => {
    if (!vocab.has(p.piece)) vocab.set(p.piece, i);
  });
  const merges: { left: string; right: string; score: number; order: number }[] = [];
  let order = 0;
  for (const p of pieces) {
    const chars = Array.from(p.piece);
    const local: { left: string; right: string }[] = [];
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join('');
      const right = chars.slice(i).join('');
      if (vocab.has(left) && vocab.has(right)) local.push({ left, right });
    }
    local.sort((a, b) => vocab.get(a.left)! - vocab.get(b.left)! || vocab.get(a.right)! - vocab.get(b.right)!);
    for (const m of local) merges.push({ ...m, score: p.score, order: order++ });
  }
  merges.sort((a, b) => b.score - a.score || a.order - b.order);
  return merges.map((m) => [m.left, m.right]);
}

export interface SpmSpecials {
  unk: number;
  bos: number;
  eos: number;
}

/** tokenizer.json (object) and tokenizer_config.json (object) for a SentencePiece BPE vocabulary. */
export function spmToTokenizerJson(pieces: Piece[], specials: SpmSpecials): { tokenizer: object; config: object } {
  // No prototype: pieces such as '__proto__' or 'constructor' (Llama 2 has them) are keys like any other.
  const vocab = Object.create(null) as Record<string, number>;
  pieces.forEach((p, i) => {
    if (!Object.hasOwn(vocab, p.piece)) vocab[p.piece] = i;
  });
  const special = (id: number) => ({
    id,
    content: pieces[id]!.piece,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const bos = pieces[specials.bos]!.piece;
  const addedTokens = pieces.flatMap((p, i) => (p.type === 'control' || p.type === 'unknown' ? [special(i)] : []));
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    // BOS before the text, as Llama's own tokenizer.json says (transformers 5 reads it from here, not
    // from add_bos_token): any tokenizer built from this folder encodes as the model was trained.
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [specials.bos], tokens: [bos] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: pieces[specials.unk]!.piece,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: deriveMerges(pieces.filter((p) => p.type === 'normal' || p.type === 'user')),
    },
  };
  const config = {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: pieces[specials.bos]!.piece,
    eos_token: pieces[specials.eos]!.piece,
    unk_token: pieces[specials.unk]!.piece,
    clean_up_tokenization_spaces: false,
    legacy: true,
    model_max_length: 1_000_000,
    tokenizer_class: 'LlamaTokenizer',
  };
  return { tokenizer, config };
}
