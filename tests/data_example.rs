//! Does the bundled example dataset (examples/data/) load whole on SmolLM2, and does every
//! assistant turn train what examples/data/README.md promises?

use edgetune::data::{self, ChatFormat, DataOptions, IGNORE};
use edgetune::gguf::GgufFile;
use edgetune::tokenizer::Tokenizer;
use std::path::PathBuf;

#[test]
fn example_dataset_loads_whole_and_trains_the_replies() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        model.display()
    );
    let f = GgufFile::open(&model).unwrap();
    let tok = Tokenizer::from_gguf(f.header()).unwrap();
    let chat = ChatFormat::from_gguf(f.header()).unwrap().unwrap();
    let opts = DataOptions {
        seq_len: 256,
        shuffle: false,
        ..DataOptions::default()
    };
    let path = root.join("examples/data/pebble_support.jsonl");
    let p = data::load(&path, &tok, Some(&chat), &opts).unwrap();
    assert!((60..=200).contains(&p.stats.records), "{:?}", p.stats);
    assert_eq!(p.stats.dropped, 0);
    assert_eq!(p.stats.truncated, 0, "records must fit --seq-len 256 whole");
    assert!(p.train.iter().all(|s| s.len() <= 160));
    let end = tok.token_id("<|im_end|>").unwrap();
    for s in &p.train {
        // Each trained run of tokens is one assistant reply: it ends with the sign-off and
        // the end-of-turn token.
        let mut k = 0;
        while k < s.len() {
            if s.labels[k] == IGNORE {
                k += 1;
                continue;
            }
            let start = k;
            while k < s.len() && s.labels[k] != IGNORE {
                k += 1;
            }
            assert_eq!(s.input_ids[k - 1], end);
            let text = tok.decode(&s.input_ids[start..k]).unwrap();
            assert!(text.ends_with("Happy growing!<|im_end|>"), "{text:?}");
            assert!(!text.contains("<|im_start|>"), "{text:?}");
        }
    }
}
