//! Do chat templates render exactly what transformers' `apply_chat_template(..., tokenize=False)`
//! renders? Fixtures from scripts/reference/make_tokenizer_fixtures.py: SmolLM2's template (from
//! its GGUF), Gemma 3's (the GGUF we have carries none, so the fixture holds it), and small
//! templates that exercise the Jinja features real templates use.

use edgetune::chat::{ChatTemplate, Message, TemplateTokens};
use edgetune::gguf::GgufFile;
use serde_json::Value as Json;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    let p = root().join("tests/fixtures/tokenizer").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn records(name: &str) -> Vec<Json> {
    fixture(name)
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn open_model(file: &str) -> GgufFile {
    let p = root().join("models").join(file);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    GgufFile::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Renders every fixture record with `render`; a record with "error" must fail (and, for
/// errors the template raises itself, with the same message).
fn check(name: &str, recs: &[Json], render: impl Fn(&Json, bool) -> edgetune::Result<String>) {
    let mut bad = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let agp = r["add_generation_prompt"].as_bool().expect("flag");
        let got = render(r, agp);
        match (&r["rendered"], &r["error"], got) {
            (Json::String(want), _, Ok(got)) if &got == want => {}
            (Json::String(want), _, got) => bad.push(format!(
                "  #{i} (agp={agp}): want {want:?}\n      got  {got:?}"
            )),
            (_, Json::String(err), Err(e)) => {
                let raised = err.strip_prefix("TemplateError: ");
                if let Some(msg) = raised {
                    if !e.to_string().contains(msg) {
                        bad.push(format!("  #{i}: want an error with {msg:?}, got {e}"));
                    }
                }
            }
            (_, Json::String(err), Ok(got)) => bad.push(format!(
                "  #{i}: transformers failed ({err}), we rendered {got:?}"
            )),
            _ => panic!("{name} record {i} has neither rendered nor error"),
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} of {} renderings differ from transformers:\n{}",
        bad.len(),
        recs.len(),
        bad.join("\n")
    );
}

#[test]
fn smollm2_template_from_gguf_matches_transformers() {
    let file = open_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let t = ChatTemplate::from_gguf(file.header()).expect("SmolLM2 has a template");
    assert_eq!(t.tokens().bos_token.as_deref(), Some("<|im_start|>"));
    let recs = records("chat_smollm2.jsonl");
    check("smollm2", &recs, |r, agp| {
        t.render_json(&r["messages"], agp)
    });
    // The typed API gives the same text for plain string conversations.
    check("smollm2 (typed)", &recs, |r, agp| {
        let msgs: Vec<Message> = match serde_json::from_value(r["messages"].clone()) {
            Ok(m) => m,
            Err(_) => return t.render_json(&r["messages"], agp), // list-of-parts content
        };
        t.render(&msgs, agp)
    });
}

#[test]
fn gemma3_template_matches_transformers() {
    let file = open_model("gemma-3-270m-q4_k_m.gguf");
    let source = fixture("gemma3_chat_template.jinja");
    let t = ChatTemplate::new(
        &source,
        TemplateTokens::from_gguf(file.header()).expect("tokens"),
    )
    .expect("Gemma 3 template compiles");
    check("gemma3", &records("chat_gemma3.jsonl"), |r, agp| {
        t.render_json_str(&r["messages"].to_string(), agp)
    });
}

#[test]
fn jinja_features_match_transformers() {
    let file = open_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let tokens = TemplateTokens::from_gguf(file.header()).expect("tokens");
    for r in records("chat_features.jsonl") {
        let name = r["name"].as_str().expect("name");
        let template = r["template"].as_str().expect("template");
        let t =
            ChatTemplate::new(template, tokens.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let messages = r["messages_json"]
            .as_str()
            .expect("messages_json")
            .to_owned();
        check(name, std::slice::from_ref(&r), |_, agp| {
            t.render_json_str(&messages, agp)
        });
    }
}

#[test]
fn a_model_without_template_is_a_clear_error() {
    let file = open_model("gemma-3-270m-q4_k_m.gguf");
    let err = ChatTemplate::from_gguf(file.header()).expect_err("this Gemma GGUF has no template");
    assert!(err.to_string().contains("no chat template"), "{err}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let t = ChatTemplate::new("{{ messages[0].content }}", TemplateTokens::default()).expect("ok");
    for bad in ["[]", "{}", "[1]", "not json", "[{\"role\": \"user\"}"] {
        assert!(t.render_json_str(bad, false).is_err(), "{bad}");
    }
    assert!(ChatTemplate::new("{% for %}", TemplateTokens::default()).is_err());
    let raising = ChatTemplate::new("{{ raise_exception('nope') }}", TemplateTokens::default())
        .expect("compiles");
    let err = raising
        .render(&[Message::new("user", "x")], false)
        .expect_err("raises");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn python_value_formatting_matches_python() {
    let v: Json = serde_json::from_str(&fixture("python_values.json")).expect("JSON");
    let mut bad = Vec::new();
    for row in v["strftime"].as_array().expect("strftime rows") {
        let (t, fmt, want) = (
            row[0].as_i64().expect("t"),
            row[1].as_str().expect("fmt"),
            &row[2],
        );
        let got = edgetune::chat::strftime_utc(t, fmt);
        if want != &got {
            bad.push(format!("strftime({t}, {fmt:?}): want {want}, got {got:?}"));
        }
    }
    for row in v["float_repr"].as_array().expect("float rows") {
        let bits = u64::from_str_radix(row[0].as_str().expect("bits"), 16).expect("hex");
        let f = f64::from_bits(bits);
        let got = edgetune::chat::py_float_repr(f);
        if row[1] != got {
            bad.push(format!("repr({f:e}): want {}, got {got:?}", row[1]));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
