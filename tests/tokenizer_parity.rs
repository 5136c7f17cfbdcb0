//! Do our tokenizers give exactly what Hugging Face transformers gives for the same GGUF file?
//!
//! Fixtures come from scripts/reference/make_tokenizer_fixtures.py (transformers' GGUF loading):
//! ids of every corpus text, BOS/EOS added by `add_special_tokens=True`, `decode(ids)`, and the
//! shape of the `tokenizers` pipeline transformers built (vocabulary and merges hashed). Any
//! difference fails the test and prints the first mismatching texts.

use edgetune::gguf::GgufFile;
use edgetune::tokenizer::{Tokenizer, TokenizerMeta};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/tokenizer")
}

fn open_model(file: &str) -> &'static GgufFile {
    static SMOLLM2: OnceLock<GgufFile> = OnceLock::new();
    static GEMMA3: OnceLock<GgufFile> = OnceLock::new();
    let cell = match file {
        "SmolLM2-135M-Instruct.Q4_1.gguf" => &SMOLLM2,
        "gemma-3-270m-q4_k_m.gguf" => &GEMMA3,
        other => panic!("no model {other} in this test"),
    };
    cell.get_or_init(|| {
        let p = root().join("models").join(file);
        assert!(
            p.exists(),
            "{} is missing: run scripts/fetch-models.sh",
            p.display()
        );
        GgufFile::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    })
}

fn corpus() -> &'static Vec<String> {
    static CORPUS: OnceLock<Vec<String>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        read_lines(&fixture_dir().join("corpus.jsonl"))
            .map(|v| v["text"].as_str().expect("text").to_owned())
            .collect()
    })
}

fn read_lines(path: &Path) -> impl Iterator<Item = Json> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect();
    lines.into_iter()
}

/// One reference tokenizer: its metadata fixture, the ids of its texts, and ours built the same way.
struct Case {
    name: &'static str,
    meta: Json,
    /// (corpus index, expected ids)
    rows: Vec<(usize, Vec<u32>)>,
    tokenizer: Tokenizer,
}

fn case(name: &'static str) -> Case {
    let dir = fixture_dir();
    let meta: Json = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("fixture"),
    )
    .expect("fixture JSON");
    let indices: Vec<usize> = meta["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|v| v.as_u64().expect("index") as usize)
        .collect();
    let ids: Vec<Vec<u32>> = read_lines(&dir.join(format!("{name}.ids.jsonl")))
        .map(|v| serde_json::from_value(v).expect("ids"))
        .collect();
    assert_eq!(
        indices.len(),
        ids.len(),
        "{name}: texts and id rows differ in number"
    );
    let file = open_model(meta["gguf"].as_str().expect("gguf"));
    let mut tm = TokenizerMeta::from_header(file.header()).expect("tokenizer metadata");
    // The variants change one field of what transformers read; change the same field here.
    let overrides = &meta["overrides"];
    if let Some(arch) = overrides["architecture"].as_str() {
        tm.architecture = leak(arch);
    }
    if let Some(pre) = overrides["pre_tokenizer_type"].as_str() {
        tm.pre = Some(leak(pre));
    }
    let tokenizer = Tokenizer::from_meta(&tm).unwrap_or_else(|e| panic!("{name}: {e}"));
    Case {
        name,
        meta,
        rows: indices.into_iter().zip(ids).collect(),
        tokenizer,
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// Fails listing the first few mismatches, if any.
fn report(name: &str, what: &str, total: usize, mismatches: Vec<String>) {
    if !mismatches.is_empty() {
        let shown: Vec<&str> = mismatches.iter().take(5).map(String::as_str).collect();
        panic!(
            "{name}: {what}: {} of {total} texts differ from transformers; first ones:\n{}",
            mismatches.len(),
            shown.join("\n")
        );
    }
}

fn pieces(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| t.token_text(i).unwrap_or_else(|| "?".into()))
        .collect()
}

fn check_ids(c: &Case) {
    let texts = corpus();
    let mut bad = Vec::new();
    for (i, want) in &c.rows {
        let got = c.tokenizer.encode(&texts[*i], false).expect("encode");
        if &got != want {
            bad.push(format!(
                "  text #{i} {:?}\n    want {want:?} {:?}\n    got  {got:?} {:?}",
                texts[*i],
                pieces(&c.tokenizer, want),
                pieces(&c.tokenizer, &got)
            ));
        }
    }
    report(c.name, "ids", c.rows.len(), bad);
}

fn check_add_special(c: &Case) {
    let texts = corpus();
    let ids_of = |key: &str| -> Vec<u32> {
        serde_json::from_value(c.meta["add_special"][key].clone()).expect("prefix/suffix")
    };
    let (prefix, suffix) = (ids_of("prefix"), ids_of("suffix"));
    let mut bad = Vec::new();
    for (i, ids) in c.rows.iter().take(50) {
        let want: Vec<u32> = [&prefix[..], ids, &suffix[..]].concat();
        let got = c.tokenizer.encode(&texts[*i], true).expect("encode");
        if got != want {
            bad.push(format!(
                "  text #{i} {:?}: want {want:?}, got {got:?}",
                texts[*i]
            ));
        }
    }
    report(c.name, "add_special", 50, bad);
}

fn check_decode(c: &Case) {
    let texts = corpus();
    let mut bad = Vec::new();
    for (i, ids) in &c.rows {
        // transformers' decode differs from the text in a few known cases (bytes without a
        // token are dropped; Llama's decoder strips one leading space): the fixture says so.
        let want = c.meta["decoded"][i.to_string()]
            .as_str()
            .unwrap_or(&texts[*i]);
        let got = c.tokenizer.decode(ids).expect("decode");
        if got != want {
            bad.push(format!("  text #{i}: want {want:?}, got {got:?}"));
        }
    }
    report(c.name, "decode", c.rows.len(), bad);
}

/// Where the pre-tokenizer's pieces end (in characters), against transformers' over every text.
fn check_splits(c: &Case) {
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
    let path = fixture_dir().join(format!("{}.splits.jsonl", c.name));
    if !path.exists() {
        return; // only byte-level pipelines have a split regex
    }
    let texts = corpus();
    let pre = c
        .tokenizer
        .hf()
        .get_pre_tokenizer()
        .expect("a pre-tokenizer");
    let mut bad = Vec::new();
    for (i, want) in read_lines(&path).enumerate() {
        let want: Vec<usize> = serde_json::from_value(want).expect("ends");
        let mut s = PreTokenizedString::from(texts[i].as_str());
        pre.pre_tokenize(&mut s).expect("pre-tokenize");
        let got: Vec<usize> = s
            .get_splits(OffsetReferential::Original, OffsetType::Char)
            .iter()
            .map(|(_, (_, end), _)| *end)
            .collect();
        if got != want {
            bad.push(format!(
                "  text #{i} {:?}: want ends {want:?}, got {got:?}",
                texts[i]
            ));
        }
    }
    report(c.name, "pre-tokenizer splits", texts.len(), bad);
}

/// `token_to_piece` of each id, concatenated, is the decoded text (the Llama decoder also
/// drops one leading space of the whole text).
fn check_pieces(c: &Case) {
    let strips = c.meta["pipeline"]["decoder"]
        .to_string()
        .contains("\"Strip\"");
    let mut bad = Vec::new();
    for (i, ids) in &c.rows {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(c.tokenizer.token_to_piece(id).expect("piece"));
        }
        if strips && bytes.first() == Some(&b' ') {
            bytes.remove(0);
        }
        let want = c.tokenizer.decode(ids).expect("decode");
        if bytes != want.as_bytes() {
            bad.push(format!(
                "  text #{i}: pieces {:?} != decode {want:?}",
                String::from_utf8_lossy(&bytes)
            ));
        }
    }
    report(c.name, "token_to_piece", c.rows.len(), bad);
}

/// The end-of-turn token is found, and EOS/EOT end generation.
fn check_special(c: &Case) {
    let t = &c.tokenizer;
    let names = &c.meta["special_tokens"];
    let text = |id: Option<u32>| id.and_then(|i| t.token_text(i));
    assert_eq!(
        text(t.bos()).as_deref(),
        names["bos_token"].as_str(),
        "{}: bos",
        c.name
    );
    assert_eq!(
        text(t.eos()).as_deref(),
        names["eos_token"].as_str(),
        "{}: eos",
        c.name
    );
    let eot = t
        .eot()
        .unwrap_or_else(|| panic!("{}: no end-of-turn token", c.name));
    for id in [eot, t.eos().expect("eos")] {
        assert!(
            t.is_end_of_generation(id),
            "{}: {:?} should end generation",
            c.name,
            text(Some(id))
        );
    }
    assert!(
        !t.is_end_of_generation(t.encode("a", false).expect("encode")[0]),
        "{}",
        c.name
    );
}

fn sha256_strings<'a>(strings: impl Iterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for s in strings {
        h.update((s.len() as u32).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn check_pipeline(c: &Case) {
    let ours: Json = serde_json::from_str(&c.tokenizer.hf().to_string(false).expect("serialize"))
        .expect("our pipeline JSON");
    let want = &c.meta["pipeline"];
    for key in ["normalizer", "pre_tokenizer", "decoder"] {
        assert_eq!(&ours[key], &want[key], "{}: {key} differs", c.name);
    }
    let mut model = ours["model"].clone();
    let obj = model.as_object_mut().expect("model object");
    let vocab = obj.remove("vocab").expect("vocab");
    let merges = obj.remove("merges").expect("merges");
    assert_eq!(&model, &want["model"], "{}: model options differ", c.name);

    let mut vocab: Vec<(&String, u64)> = vocab
        .as_object()
        .expect("vocab object")
        .iter()
        .map(|(k, v)| (k, v.as_u64().expect("id")))
        .collect();
    vocab.sort_by_key(|&(_, id)| id);
    assert_eq!(
        vocab.len() as u64,
        want_u64(c, "vocab_len"),
        "{}: vocab size",
        c.name
    );
    let ids: Vec<String> = vocab.iter().map(|(_, id)| id.to_string()).collect();
    let vocab_hash = sha256_strings(
        vocab
            .iter()
            .zip(&ids)
            .flat_map(|((k, _), id)| [k.as_str(), id.as_str()]),
    );
    assert_eq!(
        vocab_hash, c.meta["vocab_sha256"],
        "{}: vocabulary differs",
        c.name
    );

    let merges = merges.as_array().expect("merges array");
    assert_eq!(
        merges.len() as u64,
        want_u64(c, "merges_len"),
        "{}: merge count",
        c.name
    );
    let merge_hash = sha256_strings(merges.iter().flat_map(|m| {
        let pair = m.as_array().expect("merge pair");
        [
            pair[0].as_str().expect("left"),
            pair[1].as_str().expect("right"),
        ]
    }));
    assert_eq!(
        merge_hash, c.meta["merges_sha256"],
        "{}: merges or their order differ",
        c.name
    );

    // Added tokens: the same ids with the same special flag (as runs of consecutive ids).
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    for a in ours["added_tokens"].as_array().expect("added tokens") {
        let id = a["id"].as_u64().expect("id");
        let special = a["special"].as_bool().expect("special");
        for flag in ["single_word", "lstrip", "rstrip", "normalized"] {
            assert_eq!(a[flag], false, "{}: added token {id} has {flag}", c.name);
        }
        match runs.last_mut() {
            Some(r) if r.0 + r.1 == id && r.2 == special => r.1 += 1,
            _ => runs.push((id, 1, special)),
        }
    }
    let want_runs: Vec<(u64, u64, bool)> =
        serde_json::from_value(c.meta["added_tokens"].clone()).expect("added token runs");
    assert_eq!(runs, want_runs, "{}: added tokens differ", c.name);
}

fn want_u64(c: &Case, key: &str) -> u64 {
    c.meta[key].as_u64().unwrap_or_else(|| panic!("{key}"))
}

macro_rules! parity_tests {
    ($($test:ident: $name:literal,)*) => {$(
        #[test]
        fn $test() {
            let c = case($name);
            check_pipeline(&c);
            check_splits(&c);
            check_ids(&c);
            check_add_special(&c);
            check_decode(&c);
            check_pieces(&c);
            check_special(&c);
        }
    )*};
}

parity_tests! {
    smollm2_matches_transformers: "smollm2",
    gemma3_matches_transformers: "gemma3",
    llama3_split_on_smollm2_vocab_matches_transformers: "smollm2-llama3",
    qwen2_split_on_smollm2_vocab_matches_transformers: "smollm2-qwen2",
    plain_sentencepiece_on_gemma3_vocab_matches_transformers: "gemma3-as-llama",
}

#[test]
fn pre_tokenizer_regexes_are_transformers_table() {
    let path = fixture_dir().join("pre_tokenizer_splits.json");
    let table: serde_json::Map<String, Json> =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
    for (pre, re) in &table {
        assert_eq!(
            edgetune::tokenizer::pre_tokenizer_regex(pre),
            re.as_str(),
            "tokenizer.ggml.pre = {pre}"
        );
    }
    for pre in ["default", "gpt-2", "smollm", "starcoder", "unknown"] {
        assert_eq!(edgetune::tokenizer::pre_tokenizer_regex(pre), None, "{pre}");
    }
}
