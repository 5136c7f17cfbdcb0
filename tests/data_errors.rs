//! Are bad training files refused with the file, the line and what is wrong, and is nothing
//! ever skipped silently?

use edgetune::data::{self, ChatFormat, DataOptions};
use edgetune::gguf::GgufFile;
use edgetune::tokenizer::Tokenizer;
use edgetune::Error;
use std::path::PathBuf;
use std::sync::OnceLock;

struct Model {
    tok: Tokenizer,
    chat: Option<ChatFormat>,
}

fn smollm2() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            p.exists(),
            "{} is missing: run scripts/fetch-models.sh",
            p.display()
        );
        let f = GgufFile::open(&p).unwrap();
        Model {
            tok: Tokenizer::from_gguf(f.header()).unwrap(),
            chat: ChatFormat::from_gguf(f.header()).unwrap(),
        }
    })
}

fn load_bytes(name: &str, bytes: &[u8], opts: &DataOptions) -> edgetune::Result<data::Prepared> {
    load_with(name, bytes, opts, true)
}

fn load_with(
    name: &str,
    bytes: &[u8],
    opts: &DataOptions,
    with_template: bool,
) -> edgetune::Result<data::Prepared> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let m = smollm2();
    let chat = if with_template { m.chat.as_ref() } else { None };
    data::load(&path, &m.tok, chat, opts)
}

fn opts() -> DataOptions {
    DataOptions {
        shuffle: false,
        ..DataOptions::default()
    }
}

const GOOD: &str = r#"{"text": "A good line."}"#;

/// Each bad line, placed as line 3 after two good ones, is reported as `FILE:3: ...`.
#[test]
fn every_malformed_line_is_reported_with_its_line() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("invalid JSON", b"{\"text\": \"unterminated}", "invalid JSON"),
        ("trailing garbage", b"{\"text\": \"x\"} extra", "invalid JSON"),
        ("not an object", b"[1, 2, 3]", "expected a JSON object, found an array"),
        ("a bare string", b"\"text\"", "expected a JSON object, found a string"),
        ("no known field", b"{\"content\": \"x\"}", "no \"text\", \"prompt\"/\"completion\", \"messages\" or \"input_ids\" field (the record has keys content)"),
        ("empty object", b"{}", "the record has no keys"),
        ("text not a string", b"{\"text\": 5}", "\"text\" must be a string, found a number"),
        ("text null", b"{\"text\": null}", "\"text\" must be a string, found null"),
        ("prompt without completion", b"{\"prompt\": \"p\"}", "\"prompt\" without \"completion\""),
        ("completion without prompt", b"{\"completion\": \"c\"}", "\"completion\" without \"prompt\""),
        ("prompt not a string", b"{\"prompt\": [\"p\"], \"completion\": \"c\"}", "\"prompt\" must be a string, found an array"),
        ("two shapes", b"{\"text\": \"t\", \"messages\": []}", "ambiguous record"),
        ("messages not an array", b"{\"messages\": \"hi\"}", "\"messages\" must be an array, found a string"),
        ("empty messages", b"{\"messages\": []}", "\"messages\" is empty"),
        ("message not an object", b"{\"messages\": [\"hi\"]}", "\"messages\"[0] must be an object"),
        ("message without role", b"{\"messages\": [{\"content\": \"hi\"}]}", "\"messages\"[0] has no \"role\""),
        ("message without content", b"{\"messages\": [{\"role\": \"user\"}]}", "\"messages\"[0] has no \"content\""),
        ("unknown role", b"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"human\", \"content\": \"b\"}]}", "\"messages\"[1].role is \"human\", expected one of system, user, assistant, tool"),
        ("role not a string", b"{\"messages\": [{\"role\": 1, \"content\": \"a\"}]}", "\"messages\"[0].role must be a string"),
        ("content not a string", b"{\"messages\": [{\"role\": \"user\", \"content\": null}]}", "\"messages\"[0].content must be a string, found null"),
        ("extra message key", b"{\"messages\": [{\"role\": \"user\", \"content\": \"a\", \"name\": \"x\"}]}", "has the key \"name\""),
        ("ids not an array", b"{\"input_ids\": 5}", "\"input_ids\" must be an array"),
        ("empty ids", b"{\"input_ids\": []}", "\"input_ids\" is empty"),
        ("negative id", b"{\"input_ids\": [1, -2]}", "\"input_ids\"[1] must be a non-negative integer, found -2"),
        ("float id", b"{\"input_ids\": [1.5]}", "\"input_ids\"[0] must be a non-negative integer, found 1.5"),
        ("id outside vocabulary", b"{\"input_ids\": [1, 49152]}", "\"input_ids\"[1] = 49152 is outside the vocabulary of 49152 tokens"),
        ("labels length", b"{\"input_ids\": [1, 2, 3], \"labels\": [1, 2]}", "\"labels\" has 2 entries but \"input_ids\" has 3"),
        ("bad label value", b"{\"input_ids\": [1, 2], \"labels\": [-100, -1]}", "\"labels\"[1] = -1 is neither -100 nor a token id"),
        ("labels alone", b"{\"labels\": [1, 2]}", "\"labels\" without \"input_ids\""),
        ("invalid UTF-8", b"{\"text\": \"caf\xe9\"}", "invalid UTF-8 at byte 13 of the line"),
        ("assistant first, no markers", b"{\"messages\": [{\"role\": \"assistant\", \"content\": \"hi\"}]}", "message 0 is an assistant message with nothing before it"),
    ];
    for (what, line, want) in cases {
        let mut file = format!("{GOOD}\n{GOOD}\n").into_bytes();
        file.extend_from_slice(line);
        file.extend_from_slice(format!("\n{GOOD}\n").as_bytes());
        let err = load_bytes("bad.jsonl", &file, &opts())
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = err.to_string();
        match &err {
            Error::Data { line: Some(3), .. } => {}
            e => panic!("{what}: want a data error at line 3, got {e:?}"),
        }
        assert!(msg.contains("bad.jsonl:3: "), "{what}: {msg}");
        assert!(msg.contains(want), "{what}: want {want:?} in {msg:?}");
        assert!(!msg.contains("bad lines in all"), "{what}: {msg}");
    }
}

#[test]
fn several_bad_lines_are_reported_together() {
    let mut file = String::new();
    for i in 0..25 {
        file.push_str(if i % 2 == 0 {
            "{\"text\": 1}\n"
        } else {
            "{\"text\": \"ok\"}\n"
        });
    }
    let msg = load_bytes("many.jsonl", file.as_bytes(), &opts())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("many.jsonl:1: \"text\" must be a string"),
        "{msg}"
    );
    assert!(msg.contains("many.jsonl:3: "), "{msg}");
    // The first ten are listed, then the count.
    assert!(msg.contains("many.jsonl:19: "), "{msg}");
    assert!(!msg.contains(":21: "), "{msg}");
    assert_eq!(
        msg.matches("must be a string").count(),
        data::MAX_REPORTED,
        "{msg}"
    );
    assert!(msg.contains("(13 bad lines in all)"), "{msg}");
}

#[test]
fn files_without_usable_examples_are_refused() {
    let cases: &[(&str, &str, &[u8], &str)] = &[
        ("empty file", "e.jsonl", b"", "no records (the file is empty)"),
        ("blank lines only", "b.jsonl", b"\n  \n\r\n", "no records"),
        (
            "no assistant turn",
            "n.jsonl",
            br#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            "no usable example: all 1 record(s) are left with no token to train on",
        ),
        (
            "prompts that fill --seq-len, labels only on the first token",
            "c.jsonl",
            b"{\"prompt\": \"one two three four five\", \"completion\": \"six\"}\n{\"input_ids\": [5, 6], \"labels\": [5, -100]}",
            "no usable example: all 2 record(s) are left with no token to train on (after the one-token shift, at --seq-len 4)",
        ),
        ("empty text file", "d.txt", b"", "no usable example"),
    ];
    for (what, name, bytes, want) in cases {
        let o = DataOptions {
            seq_len: 4,
            ..opts()
        };
        let msg = load_bytes(name, bytes, &o)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"))
            .to_string();
        assert!(msg.contains(&format!("{name}: ")), "{what}: {msg}");
        assert!(msg.contains(want), "{what}: want {want:?} in {msg:?}");
    }
}

#[test]
fn text_files_must_be_utf8() {
    let err = load_bytes("doc.txt", b"line one\nline two\nbad \xff byte\n", &opts()).unwrap_err();
    assert!(matches!(err, Error::Data { line: Some(3), .. }), "{err:?}");
    assert!(
        err.to_string().contains("doc.txt:3: invalid UTF-8"),
        "{err}"
    );
}

#[test]
fn messages_need_a_chat_template() {
    let line = br#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
    let msg = load_with("m.jsonl", line, &opts(), false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("m.jsonl:1: "), "{msg}");
    assert!(msg.contains("need a chat template"), "{msg}");
}

#[test]
fn bad_options_are_refused() {
    let line = GOOD.as_bytes();
    for (o, want) in [
        (
            DataOptions {
                seq_len: 1,
                ..opts()
            },
            "--seq-len 1 is too short",
        ),
        (
            DataOptions {
                val_split: 1.0,
                ..opts()
            },
            "--val-split 1 is not in [0, 1)",
        ),
        (
            DataOptions {
                val_split: -0.1,
                ..opts()
            },
            "is not in [0, 1)",
        ),
        (
            DataOptions {
                val_split: 0.5,
                ..opts()
            },
            "leaves none for training",
        ),
    ] {
        let msg = load_bytes("o.jsonl", line, &o).unwrap_err().to_string();
        assert!(msg.contains(want), "want {want:?} in {msg:?}");
    }
}

/// Blank lines, CRLF endings, a BOM and unknown top-level keys are accepted; line numbers count
/// blank lines.
#[test]
fn lenient_where_it_is_harmless() {
    let file =
        "\u{feff}{\"text\": \"one\", \"id\": 7}\r\n\r\n   \n{\"text\": \"two\"}\r\n{\"text\": 3}\n";
    let err = load_bytes("l.jsonl", file.as_bytes(), &opts()).unwrap_err();
    assert!(matches!(err, Error::Data { line: Some(5), .. }), "{err:?}");
    let ok = "\u{feff}{\"text\": \"one\", \"id\": 7}\r\n\r\n   \n{\"text\": \"two\"}\r\n";
    let p = load_bytes("l.jsonl", ok.as_bytes(), &opts()).unwrap();
    assert_eq!(p.train.len(), 2);
}
