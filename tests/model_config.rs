//! Does `Config::from_header` read Llama-family metadata as llama.cpp does (defaults for absent
//! keys, typed quirks per architecture), and does it refuse what it cannot run with a message
//! naming the key?

use edgetune::gguf::{Array, GgmlType, Header, TensorInfo, Value};
use edgetune::model::{Arch, Config, RopeLayout};

fn tensor(name: &str, ne: &[u64]) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        ne: ne.to_vec(),
        ty: GgmlType::F32,
        offset: 0,
        bytes: 4 * ne.iter().product::<u64>(),
    }
}

/// SmolLM2-135M's hyper-parameters (FORMATS.md §3.1) under `arch`, with the given extra keys
/// replacing or adding to them, and tensors `extra_tensors` besides token_embd.
fn header(arch: &str, extra: &[(&str, Value)], extra_tensors: &[&str]) -> Header {
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.context_length"), Value::U32(8192)),
        (format!("{arch}.embedding_length"), Value::U32(576)),
        (format!("{arch}.block_count"), Value::U32(30)),
        (format!("{arch}.feed_forward_length"), Value::U32(1536)),
        (format!("{arch}.attention.head_count"), Value::U32(9)),
        (format!("{arch}.attention.head_count_kv"), Value::U32(3)),
        (format!("{arch}.rope.freq_base"), Value::F32(100000.0)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
        (format!("{arch}.rope.dimension_count"), Value::U32(64)),
        (format!("{arch}.vocab_size"), Value::U32(49152)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
    ];
    for (k, v) in extra {
        let k = k.replace("{arch}", arch);
        match md.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => md.push((k, v.clone())),
        }
    }
    md.retain(|(_, v)| *v != Value::String("<absent>".into()));
    let mut tensors = vec![tensor("token_embd.weight", &[576, 49152])];
    tensors.extend(extra_tensors.iter().map(|n| tensor(n, &[576])));
    Header {
        version: 3,
        metadata: md,
        tensors,
        alignment: 32,
        data_offset: 0,
    }
}

const ABSENT: fn() -> Value = || Value::String("<absent>".into());

#[test]
fn smollm2_metadata_gives_the_llama_config() {
    let c = Config::from_header(&header("llama", &[], &[])).unwrap();
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(
        (
            c.n_embd,
            c.n_layer,
            c.n_ff,
            c.n_head,
            c.n_head_kv,
            c.head_dim
        ),
        (576, 30, 1536, 9, 3, 64)
    );
    assert_eq!((c.n_vocab, c.n_ctx_train), (49152, 8192));
    assert_eq!(c.rope.layout, RopeLayout::Norm);
    assert_eq!(
        (c.rope.n_rot, c.rope.freq_base, c.rope.freq_scale),
        (64, 100000.0, 1.0)
    );
    assert!(c.tied_output && !c.qkv_bias && !c.o_bias && !c.rope.has_freq_factors);
    assert_eq!((c.bos_token, c.eos_token), (Some(1), Some(2)));
    assert_eq!((c.q_dim(), c.kv_dim()), (576, 192));
    // 134.5M parameters: SmolLM2-135M.
    assert_eq!(c.n_params(), 134_515_008);
}

#[test]
fn qwen2_uses_neox_rope_and_needs_qkv_bias() {
    let c = Config::from_header(&header(
        "qwen2",
        &[],
        &["blk.0.attn_q.bias", "output.weight"],
    ))
    .unwrap();
    assert_eq!((c.arch, c.rope.layout), (Arch::Qwen2, RopeLayout::Neox));
    assert!(c.qkv_bias && !c.tied_output);
    let err = Config::from_header(&header("qwen2", &[], &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("blk.0.attn_q.bias"), "{err}");
}

#[test]
fn absent_keys_take_llama_cpp_defaults() {
    let h = header(
        "llama",
        &[
            ("{arch}.attention.head_count_kv", ABSENT()),
            ("{arch}.rope.freq_base", ABSENT()),
            ("{arch}.rope.dimension_count", ABSENT()),
            ("{arch}.vocab_size", ABSENT()),
            (
                "tokenizer.ggml.tokens",
                Value::Array(Array::String(vec!["a".into(); 49152])),
            ),
            ("{arch}.rope.scaling.type", Value::String("linear".into())),
            ("{arch}.rope.scaling.factor", Value::F32(4.0)),
        ],
        &["rope_freqs.weight"],
    );
    let c = Config::from_header(&h).unwrap();
    assert_eq!(
        (c.n_head_kv, c.head_dim, c.rope.n_rot, c.rope.freq_base),
        (9, 64, 64, 10000.0)
    );
    assert_eq!(
        (c.n_vocab, c.rope.freq_scale, c.rope.has_freq_factors),
        (49152, 0.25, true)
    );
    // Per-layer arrays that agree are accepted; key_length overrides n_embd / n_head.
    let h = header(
        "llama",
        &[
            (
                "{arch}.attention.head_count",
                Value::Array(Array::U32(vec![9; 30])),
            ),
            ("{arch}.attention.key_length", Value::U32(80)),
            ("{arch}.attention.value_length", Value::U32(80)),
            ("{arch}.rope.dimension_count", Value::U32(80)),
        ],
        &[],
    );
    let c = Config::from_header(&h).unwrap();
    assert_eq!((c.n_head, c.head_dim, c.q_dim()), (9, 80, 720));
}

#[test]
fn bad_metadata_is_refused_with_a_message_naming_it() {
    let cases: Vec<(Header, &str)> = vec![
        (header("gpt2", &[], &[]), "architecture 'gpt2'"),
        (
            header("llama", &[("{arch}.block_count", ABSENT())], &[]),
            "llama.block_count",
        ),
        (
            header(
                "llama",
                &[("{arch}.embedding_length", Value::F32(576.0))],
                &[],
            ),
            "llama.embedding_length",
        ),
        (
            header(
                "llama",
                &[("{arch}.attention.head_count_kv", Value::U32(4))],
                &[],
            ),
            "not a multiple",
        ),
        (
            header(
                "llama",
                &[("{arch}.attention.head_count", Value::U32(0))],
                &[],
            ),
            "llama.attention.head_count' is 0",
        ),
        (
            header(
                "llama",
                &[("{arch}.rope.scaling.type", Value::String("yarn".into()))],
                &[],
            ),
            "yarn",
        ),
        (
            header(
                "llama",
                &[("{arch}.rope.dimension_count", Value::U32(32))],
                &[],
            ),
            "partial rope",
        ),
        (
            header(
                "llama",
                &[("{arch}.rope.dimension_count", Value::U32(63))],
                &[],
            ),
            "must be even",
        ),
        (
            header(
                "llama",
                &[("{arch}.attention.value_length", Value::U32(32))],
                &[],
            ),
            "value_length",
        ),
        (
            header(
                "llama",
                &[(
                    "{arch}.feed_forward_length",
                    Value::Array(Array::U32((0..30).collect())),
                )],
                &[],
            ),
            "varies between layers",
        ),
        (
            header(
                "llama",
                &[(
                    "{arch}.feed_forward_length",
                    Value::Array(Array::U32(vec![1536; 3])),
                )],
                &[],
            ),
            "one per layer",
        ),
        (
            header(
                "llama",
                &[("{arch}.attention.layer_norm_rms_epsilon", ABSENT())],
                &[],
            ),
            "layer_norm_rms_epsilon",
        ),
    ];
    for (h, needle) in cases {
        let err = Config::from_header(&h).unwrap_err().to_string();
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
    }
    let mut h = header("llama", &[], &[]);
    h.metadata.retain(|(k, _)| k != "general.architecture");
    let err = Config::from_header(&h).unwrap_err().to_string();
    assert!(err.contains("general.architecture"), "{err}");
}
