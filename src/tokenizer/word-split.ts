// Encoding speed for SentencePiece-style BPE (LLaMA 2, Mistral, Phi-3, Gemma, llama2.c): their tokenizer.json
// has no pre-tokenizer, so @huggingface/tokenizers runs BPE over each text as one "word" (its priority queue
// grows with the whole text, and its per-word cache never hits). When no vocabulary piece and no merge holds
// a "▁" right after another character, no merge can ever join two words (a word: a run of "▁" and the
// characters up to the next "▁"), so splitting the text into such words before BPE gives the same tokens,
// and repeated words come from the cache. The split is for the encoder in memory only: the tokenizer.json
// mixlora writes out stays as read.

/** A "▁" preceded by anything else: a piece holding one would span two words. */
const SPANS_WORDS = /[^▁]▁/;
/** Words in order, covering the whole text: leading "▁"s with what follows, or a trailing run of "▁"s. */
const WORD_PATTERN = '▁*[^▁]+|▁+';

type Json = Record<string, unknown>;

function isSentencePieceBpe(j: Json): boolean {
  const model = j.model as Json | undefined;
  const normalizer = JSON.stringify(j.normalizer ?? null);
  return (
    (j.pre_tokenizer === null || j.pre_tokenizer === undefined) &&
    model?.type === 'BPE' &&
    (model.end_of_word_suffix ?? null) === null &&
    (model.continuing_subword_prefix ?? null) === null &&
    // Spaces become "▁" before the model sees the text (LLaMA's legacy layout, Gemma's Replace).
    normalizer.includes('"content":"▁"')
  );
}

function noPieceSpansWords(model: Json): boolean {
  const vocab = model.vocab;
  if (vocab === null || typeof vocab !== 'object' || Array.isArray(vocab)) return false;
  for (const piece of Object.keys(vocab)) if (SPANS_WORDS.test(piece)) return false;
  const merges = model.merges;
  if (!Array.isArray(merges)) return false;
  for (const m of merges as unknown[]) {
    const joined = Array.isArray(m) ? m.join('') : typeof m === 'string' ? m.replace(' ', '') : null;
    if (joined === null || SPANS_WORDS.test(joined)) return false;
  }
  return true;
}

/** tokenizer.json with a pre-tokenizer that splits the normalised text into words, when that cannot change
 * the tokens (see the file's head); otherwise the same object. */
export function withWordSplit(tokenizerJson: object): object {
  const j = tokenizerJson as Json;
  if (!isSentencePieceBpe(j) || !noPieceSpansWords(j.model as Json)) return tokenizerJson;
  // `invert: true`: the pattern's matches are the pieces (@huggingface/tokenizers' reading of Split).
  return {
    ...j,
    pre_tokenizer: { type: 'Split', pattern: { Regex: WORD_PATTERN }, behavior: 'Isolated', invert: true },
  };
}
