//! Does the data pipeline give the input_ids and labels TRL's SFTTrainer gives? Fixtures from
//! scripts/reference/make_data_fixtures.py (TRL 1.16 `_prepare_dataset` + its collator, and
//! transformers' assistant masks), for every record shape, truncation and packing, on the
//! SmolLM2 and Gemma 3 tokenizers.

use edgetune::chat::{Message, TemplateTokens};
use edgetune::data::{self, ChatFormat, DataOptions};
use edgetune::gguf::GgufFile;
use edgetune::tokenizer::Tokenizer;
use serde_json::Value as Json;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/data")
}

fn lines(name: &str) -> Vec<Json> {
    let p = fixtures().join(name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn open(model: &str) -> GgufFile {
    let file = match model {
        "smollm2" => "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3" => "gemma-3-270m-q4_k_m.gguf",
        m => panic!("unknown model {m}"),
    };
    let p = root().join("models").join(file);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    GgufFile::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Model {
    tok: Tokenizer,
    chat: Option<ChatFormat>,
}

fn model(name: &str) -> Model {
    let f = open(name);
    Model {
        tok: Tokenizer::from_gguf(f.header()).unwrap(),
        chat: ChatFormat::from_gguf(f.header()).unwrap(),
    }
}

fn ints<T: TryFrom<i64>>(v: &Json) -> Vec<T>
where
    T::Error: std::fmt::Debug,
{
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| T::try_from(x.as_i64().expect("integer")).unwrap())
        .collect()
}

#[test]
fn sequences_match_trl() {
    let models = [("smollm2", model("smollm2")), ("gemma3", model("gemma3"))];
    let cases = lines("expected.jsonl");
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let m = &models
            .iter()
            .find(|(n, _)| *n == case["model"].as_str().unwrap())
            .unwrap()
            .1;
        let opts = DataOptions {
            seq_len: case["seq_len"].as_u64().unwrap() as usize,
            pack: case["pack"].as_bool().unwrap(),
            train_on_prompt: case["train_on_prompt"].as_bool().unwrap(),
            shuffle: false,
            seed: 0,
            val_split: 0.0,
        };
        let path = fixtures()
            .join("inputs")
            .join(case["file"].as_str().unwrap());
        let got = match data::load(&path, &m.tok, m.chat.as_ref(), &opts) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        assert!(got.val.is_empty());
        let want = case["sequences"].as_array().unwrap();
        if got.train.len() != want.len() {
            failures.push(format!(
                "{name}: {} sequences, TRL has {}",
                got.train.len(),
                want.len()
            ));
            continue;
        }
        for (k, (g, w)) in got.train.iter().zip(want).enumerate() {
            let ids: Vec<u32> = ints(&w["input_ids"]);
            let labels: Vec<i32> = ints(&w["labels"]);
            if g.input_ids != ids || g.labels != labels {
                failures.push(format!(
                    "{name} #{k}:\n    ids    {:?}\n    want   {ids:?}\n    labels {:?}\n    want   {labels:?}",
                    g.input_ids, g.labels
                ));
                continue;
            }
            if opts.pack {
                let docs: Vec<usize> = ints::<i64>(&w["seq_lengths"])
                    .into_iter()
                    .map(|d| d as usize)
                    .collect();
                let pos: Vec<u32> = ints(&w["position_ids"]);
                let got_pos: Vec<u32> = g.position_ids().collect();
                if g.doc_lengths != docs || got_pos != pos {
                    failures.push(format!(
                        "{name} #{k}: documents {:?} positions {got_pos:?}, want {docs:?} {pos:?}",
                        g.doc_lengths
                    ));
                }
            } else {
                assert_eq!(g.doc_lengths, [g.len()]);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Templates with `{% generation %}` markers (whitespace control, markers on their own lines,
/// markers that leave the end token out) give transformers' `assistant_masks`.
#[test]
fn generation_markers_give_transformers_masks() {
    let f = open("smollm2");
    let tok = Tokenizer::from_gguf(f.header()).unwrap();
    let tokens = TemplateTokens::from_gguf(f.header()).unwrap();
    let recs = lines("chat_masks.jsonl");
    assert!(recs.len() >= 50);
    let mut failures = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let name = r["template"].as_str().unwrap();
        let chat = ChatFormat::new(r["source"].as_str().unwrap(), tokens.clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(chat.has_generation_markers(), "{name}");
        let messages: Vec<Message> = serde_json::from_value(r["messages"].clone()).unwrap();
        let rendered = chat.render(&messages, false).unwrap();
        if rendered != r["rendered"].as_str().unwrap() {
            failures.push(format!(
                "#{i} {name}: rendered {rendered:?}, want {:?}",
                r["rendered"]
            ));
            continue;
        }
        let got = chat.encode(&tok, &messages, true).unwrap();
        let ids: Vec<u32> = ints(&r["input_ids"]);
        let mask: Vec<bool> = ints::<i64>(&r["assistant_masks"])
            .into_iter()
            .map(|m| m == 1)
            .collect();
        if got.ids != ids || got.trained != mask {
            failures.push(format!(
                "#{i} {name}:\n    mask {:?}\n    want {mask:?}",
                got.trained.iter().map(|&t| t as u8).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// SmolLM2's own template (no markers) marks the same tokens as its marked variant: the rule
/// for templates without markers is "content + end-of-turn token".
#[test]
fn templates_without_markers_mark_content_and_end_of_turn() {
    let f = open("smollm2");
    let tok = Tokenizer::from_gguf(f.header()).unwrap();
    let plain = ChatFormat::from_gguf(f.header()).unwrap().unwrap();
    assert!(!plain.has_generation_markers());
    let mut n = 0;
    for r in lines("chat_masks.jsonl") {
        if r["template"] != "smollm2_tagged" {
            continue;
        }
        let messages: Vec<Message> = serde_json::from_value(r["messages"].clone()).unwrap();
        let got = plain.encode(&tok, &messages, true).unwrap();
        let mask: Vec<bool> = ints::<i64>(&r["assistant_masks"])
            .into_iter()
            .map(|m| m == 1)
            .collect();
        assert_eq!(got.ids, ints::<u32>(&r["input_ids"]), "{messages:?}");
        assert_eq!(got.trained, mask, "{messages:?}");
        n += 1;
    }
    assert!(n >= 10);
}
