#!/usr/bin/env python3
"""Writes the protocol test vectors from PROTOCOL.md, independently of the C++ codec.

Run from proto-spec/vectors: python3 gen_vectors.py. Each vector is NNN-name.hex (the frame
as hex, 16 bytes a line) and NNN-name.json (its decoded meaning, or the error it must give).
"""
import json
import struct

MAGIC = 0x574C


def frame(type_, request_id, payload, version=1, magic=MAGIC, length=None):
    n = len(payload) if length is None else length
    return struct.pack('<HBBII', magic, version, type_, request_id, n) + payload


def s(text):
    b = text.encode()
    return struct.pack('<H', len(b)) + b


def toks(ids):
    return struct.pack('<I', len(ids)) + b''.join(struct.pack('<I', t) for t in ids)


def write(name, data, meaning):
    hexed = data.hex()
    lines = [' '.join(hexed[i:i + 2] for i in range(j, min(j + 32, len(hexed)), 2)) for j in range(0, len(hexed), 32)]
    with open(name + '.hex', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with open(name + '.json', 'w') as f:
        json.dump(meaning, f, indent=2)
        f.write('\n')


def ok(name, type_name, type_, rid, payload, fields):
    write(name, frame(type_, rid, payload), {"type": type_name, "request_id": rid, "fields": fields})


ok('001-hello', 'HELLO', 0x01, 1, struct.pack('<HH', 1, 0) + s('') + s('llamawire-cli'),
   {"major": 1, "minor": 0, "api_key": "", "client_name": "llamawire-cli"})
# 1.4: HELLO and HELLO_OK may grow; a receiver ignores bytes after the fields it knows.
write('012-hello-trailing-field', frame(0x01, 1, struct.pack('<HH', 1, 9) + s('') + s('future-client') + struct.pack('<I', 0xDEADBEEF)),
      {"type": "HELLO", "request_id": 1, "fields": {"major": 1, "minor": 9, "api_key": "", "client_name": "future-client"},
       "ignored_trailing_bytes": 4})
ok('002-get-tokenizer', 'GET_TOKENIZER', 0x02, 2, b'', {})
ok('003-forward', 'FORWARD', 0x03, 3, struct.pack('<I', 0) + toks([1, 303, 281]), {"start_pos": 0, "tokens": [1, 303, 281]})
ok('004-generate', 'GENERATE', 0x04, 4,
   struct.pack('<IIffQI', 0, 100, 0.5, 0.9, 42, 1) + toks([1, 303, 281, 269]),
   {"start_pos": 0, "limit_pos": 100, "temperature": 0.5, "topp": struct.unpack('<f', struct.pack('<f', 0.9))[0],
    "seed": 42, "flags": 1, "tokens": [1, 303, 281, 269]})
ok('005-reset', 'RESET', 0x05, 5, struct.pack('<I', 0), {"position": 0})
ok('006-cancel', 'CANCEL', 0x06, 6, b'', {})
ok('007-ping', 'PING', 0x07, 7, struct.pack('<Q', 0x0123456789ABCDEF), {"nonce": 0x0123456789ABCDEF})
ok('008-stats', 'STATS', 0x08, 8, b'', {})
ok('101-hello-ok', 'HELLO_OK', 0x81, 1,
   struct.pack('<HH', 1, 0) + struct.pack('<10I', 64, 172, 4, 4, 4, 512, 128, 128, 1048576, 6290) + b'\x00' + s('aidreams260K.bin'),
   {"major": 1, "minor": 0, "dim": 64, "hidden_dim": 172, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4,
    "vocab_size": 512, "seq_len": 128, "context": 128, "max_frame_bytes": 1048576, "tokenizer_bytes": 6290,
    "weights": 0, "model_name": "aidreams260K.bin"})
ok('102-tokenizer', 'TOKENIZER', 0x82, 2, bytes([10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x41]),
   {"bytes": "0a000000000000000100000041"})
ok('103-logits', 'LOGITS', 0x83, 3, struct.pack('<II', 2, 3) + struct.pack('<3f', 1.5, -2.0, 0.25),
   {"pos": 2, "values": [1.5, -2.0, 0.25]})
ok('104-token', 'TOKEN', 0x84, 4, struct.pack('<I', 447), {"token": 447})
ok('105-end', 'END', 0x85, 4, struct.pack('<BIIII', 1, 4, 73, 77, 1),
   {"reason": "bos", "prompt_tokens": 4, "generated_tokens": 73, "position": 77, "last_token": 1})
ok('106-ok', 'OK', 0x86, 5, struct.pack('<I', 0), {"position": 0})
ok('107-pong', 'PONG', 0x87, 7, struct.pack('<Q', 0x0123456789ABCDEF), {"nonce": 0x0123456789ABCDEF})
ok('009-get-vocab', 'GET_VOCAB', 0x09, 9, b'', {})


def vocab_payload(kind, ids, flags, template, tokens):
    out = struct.pack('<BI', kind, len(tokens)) + struct.pack('<5i', *ids) + struct.pack('<B', flags) + s(template)
    for score, type_, piece in tokens:
        out += struct.pack('<fB', score, type_) + s(piece)
    return out


# A four-token SentencePiece vocabulary: <unk> (unknown), <s> (control), </s> (control), "▁a" (normal).
VOCAB_TOKENS = [(0.0, 2, '<unk>'), (0.0, 3, '<s>'), (0.0, 3, '</s>'), (-1.5, 1, '\u2581a')]
ok('110-vocab', 'VOCAB', 0x89, 9, vocab_payload(1, [1, 2, -1, 0, -1], 5, 'zephyr', VOCAB_TOKENS),
   {"kind": 1, "bos": 1, "eos": 2, "eot": -1, "unk": 0, "pad": -1, "add_bos": True, "add_eos": False,
    "add_space_prefix": True, "chat_template": "zephyr",
    "tokens": [{"score": sc, "type": ty, "piece": p} for sc, ty, p in VOCAB_TOKENS]})


def vocab_trailer(end_ids, pre, merges):
    out = struct.pack('<I', len(end_ids)) + b''.join(struct.pack('<i', i) for i in end_ids) + s(pre)
    return out + struct.pack('<I', len(merges)) + b''.join(s(m) for m in merges)


# 1.3: a four-token byte-level BPE vocabulary with its trailer: "a", "b", "ab" (normal, the
# merge "a b" makes "ab"), "<|eot_id|>" (control, an end id); BOS none, EOS 3.
BPE_TOKENS = [(0.0, 1, 'a'), (0.0, 1, 'b'), (0.0, 1, 'ab'), (0.0, 3, '<|eot_id|>')]
ok('111-vocab-bpe', 'VOCAB', 0x89, 9,
   vocab_payload(2, [-1, 3, -1, -1, -1], 1, 'llama3', BPE_TOKENS) + vocab_trailer([3], 'llama-bpe', ['a b']),
   {"kind": 2, "bos": -1, "eos": 3, "eot": -1, "unk": -1, "pad": -1, "add_bos": True, "add_eos": False,
    "add_space_prefix": False, "chat_template": "llama3",
    "tokens": [{"score": sc, "type": ty, "piece": p} for sc, ty, p in BPE_TOKENS],
    "end_ids": [3], "pre": "llama-bpe", "merges": ["a b"]})
ok('108-stats-reply', 'STATS_REPLY', 0x88, 8, b'{"sessions":1}', {"json": '{"sessions":1}'})
ok('109-error', 'ERROR', 0xFF, 3, struct.pack('<HB', 7, 0) + s('token 600 out of range [0, 512)'),
   {"code": 7, "fatal": 0, "message": "token 600 out of range [0, 512)"})


def bad(name, data, error, before_hello=False):
    meaning = {"error": error}
    if before_hello:
        meaning["before_hello"] = True  # checked against the pre-HELLO limit of 4096 bytes
    write(name, data, meaning)


bad('901-bad-magic', frame(0x07, 1, struct.pack('<Q', 1), magic=0x4547), 'bad_frame')  # "GE": an HTTP GET
bad('902-bad-version', frame(0x07, 1, struct.pack('<Q', 1), version=2), 'version_mismatch')
bad('903-oversized-length', frame(0x03, 1, b'', length=0x7FFFFFFF), 'frame_too_large')
bad('904-unknown-type', frame(0x42, 1, b'\x00\x01'), 'unknown_message')
bad('905-forward-count-mismatch', frame(0x03, 1, struct.pack('<II', 0, 5) + struct.pack('<I', 1)), 'bad_message')
bad('906-forward-empty', frame(0x03, 1, struct.pack('<II', 0, 0)), 'bad_message')
bad('907-generate-seed-zero', frame(0x04, 1, struct.pack('<IIffQI', 0, 10, 1.0, 0.9, 0, 0) + toks([1])), 'bad_message')
bad('908-hello-string-overrun', frame(0x01, 1, struct.pack('<HHH', 1, 0, 200) + b'abc'), 'bad_message')
bad('909-ping-truncated', frame(0x07, 1, b'\x01\x02\x03'), 'bad_message')
bad('910-reset-trailing-bytes', frame(0x05, 1, struct.pack('<II', 0, 0)), 'bad_message')
bad('911-generate-negative-temperature', frame(0x04, 1, struct.pack('<IIffQI', 0, 10, -1.0, 0.9, 1, 0) + toks([1])), 'bad_message')
bad('913-hello-too-large-before-handshake', frame(0x01, 1, b'', length=5000), 'frame_too_large', before_hello=True)
bad('914-vocab-count-overrun', frame(0x89, 9, vocab_payload(1, [1, 2, -1, 0, -1], 5, 'llama2', VOCAB_TOKENS)[:1] +
                                      struct.pack('<I', 1000000) + vocab_payload(1, [1, 2, -1, 0, -1], 5, 'llama2', VOCAB_TOKENS)[5:]),
    'bad_message')
bad('915-vocab-bad-token-type', frame(0x89, 9, vocab_payload(1, [1, 2, -1, 0, -1], 5, 'llama2',
                                                               VOCAB_TOKENS[:3] + [(0.0, 9, 'x')])), 'bad_message')
bad('916-vocab-bpe-without-trailer', frame(0x89, 9, vocab_payload(2, [-1, 3, -1, -1, -1], 1, 'llama3', BPE_TOKENS)),
    'bad_message')
bad('917-vocab-end-id-out-of-range', frame(0x89, 9, vocab_payload(2, [-1, 3, -1, -1, -1], 1, 'llama3', BPE_TOKENS) +
                                           vocab_trailer([4], 'llama-bpe', ['a b'])), 'bad_message')


def f32(x):
    return struct.unpack('<f', struct.pack('<f', x))[0]


# 1.5: GENERATE with the sampling extension (flags bit 1) after its tokens.
def sampling_ext(top_k, min_p, rep, last_n, pres, freq, bias, grammar, logprobs):
    g = grammar.encode()
    return (struct.pack('<Iffiff', top_k, min_p, rep, last_n, pres, freq) + struct.pack('<I', len(bias)) +
            b''.join(struct.pack('<If', t, b) for t, b in bias) + struct.pack('<I', len(g)) + g + struct.pack('<B', logprobs))


ok('010-generate-sampling', 'GENERATE', 0x04, 10,
   struct.pack('<IIffQI', 0, 64, 0.8, 0.95, 7, 3) + toks([1, 303]) +
   sampling_ext(40, 0.05, 1.1, 64, 0.5, 0.25, [(2, -100.0)], 'root ::= "a"+', 3),
   {"start_pos": 0, "limit_pos": 64, "temperature": f32(0.8), "topp": f32(0.95), "seed": 7, "flags": 3, "tokens": [1, 303],
    "sampling": {"top_k": 40, "min_p": f32(0.05), "repeat_penalty": f32(1.1), "repeat_last_n": 64,
                 "presence_penalty": 0.5, "frequency_penalty": 0.25, "logit_bias": [[2, -100.0]],
                 "grammar": 'root ::= "a"+', "logprobs": 3}})
ok('112-token-logprobs', 'TOKEN_LOGPROBS', 0x8A, 10,
   struct.pack('<IfB', 447, -0.5, 2) + struct.pack('<IfIf', 447, -0.5, 12, -1.25),
   {"token": 447, "logprob": -0.5, "top": [[447, -0.5], [12, -1.25]]})
ok('113-end-grammar', 'END', 0x85, 10, struct.pack('<BIIII', 6, 2, 9, 10, 97),
   {"reason": "grammar", "prompt_tokens": 2, "generated_tokens": 9, "position": 10, "last_token": 97})
bad('918-generate-sampling-truncated', frame(0x04, 1, struct.pack('<IIffQI', 0, 10, 1.0, 0.9, 1, 2) + toks([1]) +
                                              sampling_ext(0, 0.0, 1.0, 64, 0.0, 0.0, [], '', 0)[:-3]), 'bad_message')
bad('919-generate-sampling-min-p-above-1', frame(0x04, 1, struct.pack('<IIffQI', 0, 10, 1.0, 0.9, 1, 2) + toks([1]) +
                                                  sampling_ext(0, 2.0, 1.0, 64, 0.0, 0.0, [], '', 0)), 'bad_message')
bad('912-generate-unknown-flags', frame(0x04, 1, struct.pack('<IIffQI', 0, 10, 1.0, 0.9, 1, 6) + toks([1])), 'bad_message')
