"""Records reference token ids for the tokenizer tests (run by hand; needs python3-sentencepiece):
- the LLaMA-2 tokenizer.model through the sentencepiece library itself;
- stories260K's tok512.bin through a line-by-line Python port of llama2.c's encode() (run.c)."""
import json
import os
import struct

import sentencepiece as spm

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
STRINGS = [
    'Once upon a time', 'Hello world!\nNew line', 'café ñ 😀', '  two  spaces', 'The quick brown fox jumps over the lazy dog.',
    'Lily and Ben went to the park. They saw a big dog!', 'numbers 12345 and symbols #@$%^&*()', 'tabs\tand\nnewlines\n\n',
    'Please answer the following question with true or false, question: is the sky blue?', '日本語のテキスト', 'a',
]


def llama2c_encode(path, vocab_size, text):
    data = open(path, 'rb').read()
    off = 4
    vocab, scores = [], []
    for _ in range(vocab_size):
        score, n = struct.unpack('fi', data[off:off + 8])
        off += 8
        vocab.append(data[off:off + n])
        scores.append(score)
        off += n
    lookup = {v: i for i, v in enumerate(vocab)}
    tokens = [1]  # BOS
    if text:
        tokens.append(lookup[b' '])  # dummy prefix
    raw = text.encode('utf-8')
    i = 0
    while i < len(raw):
        j = i + 1
        while j < len(raw) and (raw[j] & 0xC0) == 0x80 and j - i < 4:
            j += 1
        piece = raw[i:j]
        if piece in lookup:
            tokens.append(lookup[piece])
        else:
            tokens.extend(b + 3 for b in piece)
        i = j
    while True:
        best, best_id, best_idx = -1e10, -1, -1
        for k in range(1, len(tokens)):
            merged = vocab[tokens[k - 1]] + vocab[tokens[k]]
            mid = lookup.get(merged, -1)
            if mid != -1 and scores[mid] > best:
                best, best_id, best_idx = scores[mid], mid, k - 1
        if best_idx == -1:
            break
        tokens[best_idx:best_idx + 2] = [best_id]
    return tokens


sp = spm.SentencePieceProcessor(model_file=os.path.join(ROOT, 'test/fixtures/llama2-tokenizer/tokenizer.model'))
tok512 = os.path.join(ROOT, 'assets/models/stories260K/tok512.bin')
out = {
    'llama2': [{'text': s, 'ids': [1] + sp.encode(s)} for s in STRINGS],
    'tok512': [{'text': s, 'ids': llama2c_encode(tok512, 512, s)} for s in STRINGS],
}
with open(os.path.join(ROOT, 'test/fixtures/llama2-tokenizer/ids.json'), 'w') as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
print('wrote ids.json')
