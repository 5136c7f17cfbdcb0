//! Does bad tokenizer metadata, or a bad id, give an error that names the problem (never a panic)?

use edgetune::gguf::{Array, Header, Value};
use edgetune::tokenizer::Tokenizer;

fn strings(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
}

fn header(kv: Vec<(&str, Value)>) -> Header {
    Header {
        version: 3,
        metadata: kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        tensors: Vec::new(),
        alignment: 32,
        data_offset: 0,
    }
}

/// A small valid byte-level vocabulary: the fields each case then breaks.
fn gpt2() -> Vec<(&'static str, Value)> {
    vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            strings(&["<|end|>", "a", "b", "ab", "\u{120}"]),
        ),
        ("tokenizer.ggml.merges", strings(&["a b"])),
        (
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![3, 1, 1, 1, 1])),
        ),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ]
}

fn llama() -> Vec<(&'static str, Value)> {
    vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            strings(&["<unk>", "<s>", "a", "b", "ab"]),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(Array::F32(vec![0.0, 0.0, -1.0, -2.0, -0.5])),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
    ]
}

fn with(mut base: Vec<(&'static str, Value)>, key: &'static str, v: Option<Value>) -> Header {
    base.retain(|(k, _)| *k != key);
    if let Some(v) = v {
        base.push((key, v));
    }
    header(base)
}

#[test]
fn bad_metadata_is_rejected_with_the_key_named() {
    let cases: Vec<(&str, Header, &str)> = vec![
        (
            "no model",
            with(gpt2(), "tokenizer.ggml.model", None),
            "tokenizer.ggml.model",
        ),
        (
            "unknown model",
            with(
                gpt2(),
                "tokenizer.ggml.model",
                Some(Value::String("bert".into())),
            ),
            "bert",
        ),
        (
            "model not a string",
            with(gpt2(), "tokenizer.ggml.model", Some(Value::U32(2))),
            "tokenizer.ggml.model",
        ),
        (
            "no tokens",
            with(gpt2(), "tokenizer.ggml.tokens", None),
            "tokenizer.ggml.tokens",
        ),
        (
            "empty tokens",
            with(gpt2(), "tokenizer.ggml.tokens", Some(strings(&[]))),
            "empty",
        ),
        (
            "tokens of the wrong type",
            with(
                gpt2(),
                "tokenizer.ggml.tokens",
                Some(Value::Array(Array::U32(vec![1]))),
            ),
            "array of u32",
        ),
        (
            "short token types",
            with(
                gpt2(),
                "tokenizer.ggml.token_type",
                Some(Value::Array(Array::I32(vec![1]))),
            ),
            "1 token types for 5 tokens",
        ),
        (
            "token types not i32",
            with(
                gpt2(),
                "tokenizer.ggml.token_type",
                Some(Value::Array(Array::U8(vec![1; 5]))),
            ),
            "tokenizer.ggml.token_type",
        ),
        (
            "gpt2 without merges",
            with(gpt2(), "tokenizer.ggml.merges", None),
            "merges",
        ),
        (
            "merge without a space",
            with(
                gpt2(),
                "tokenizer.ggml.merges",
                Some(strings(&["a b", "ab"])),
            ),
            "tokenizer.ggml.merges[1]",
        ),
        (
            "merge of unknown tokens",
            with(gpt2(), "tokenizer.ggml.merges", Some(strings(&["a zz"]))),
            "zz",
        ),
        (
            "negative special id",
            with(gpt2(), "tokenizer.ggml.eos_token_id", Some(Value::I32(-1))),
            "tokenizer.ggml.eos_token_id",
        ),
        (
            "add_bos not a bool",
            with(gpt2(), "tokenizer.ggml.add_bos_token", Some(Value::U8(1))),
            "tokenizer.ggml.add_bos_token",
        ),
        (
            "short scores",
            with(
                llama(),
                "tokenizer.ggml.scores",
                Some(Value::Array(Array::F32(vec![0.0]))),
            ),
            "1 scores for 5 tokens",
        ),
        (
            "sentencepiece without scores or merges",
            with(llama(), "tokenizer.ggml.scores", None),
            "tokenizer.ggml.scores",
        ),
    ];
    let mut bad = Vec::new();
    for (what, h, needle) in &cases {
        match Tokenizer::from_gguf(h) {
            Ok(_) => bad.push(format!("{what}: accepted")),
            Err(e) if !e.to_string().contains(needle) => {
                bad.push(format!("{what}: error {e:?} does not mention {needle:?}"))
            }
            Err(_) => {}
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_small_vocabularies_build_and_out_of_range_ids_are_errors() {
    for (name, h) in [("gpt2", header(gpt2())), ("llama", header(llama()))] {
        let t = Tokenizer::from_gguf(&h).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.vocab_size(), 5, "{name}");
        let ids = t.encode("ab", false).expect("encode");
        assert_eq!(t.decode(&ids).expect("decode"), "ab", "{name}");
        for id in [5u32, u32::MAX] {
            let e = t.decode(&[2, id]).expect_err("out of range");
            assert!(e.to_string().contains(&id.to_string()), "{name}: {e}");
            assert!(t.token_to_piece(id).is_err(), "{name}");
            assert_eq!(t.token_text(id), None, "{name}");
        }
    }
    // An id past the vocabulary in the metadata is ignored, as llama.cpp does.
    let h = with(gpt2(), "tokenizer.ggml.eos_token_id", Some(Value::U32(99)));
    assert_eq!(Tokenizer::from_gguf(&h).expect("builds").eos(), None);
}
