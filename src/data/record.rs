//! JSONL records: one JSON object a line, in one of the shapes DESIGN.md names. Parsing checks
//! every field's type here, so a bad record is reported with its line before any tokenizing.
//!
//! Blank (whitespace-only) lines are skipped. Keys other than the shape's own are ignored at the
//! top level (datasets often carry `id` or `source`), but a record with the keys of two shapes is
//! refused, and so is a message with keys other than `role` and `content`.

use crate::chat::Message;
use serde_json::{Map, Value};

/// Roles a `messages` record may use.
pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// One training record, as read from a line.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// `{"text": ...}`: trained on every token.
    Text(String),
    /// `{"prompt": ..., "completion": ...}`: trained on the completion.
    PromptCompletion { prompt: String, completion: String },
    /// `{"messages": [{"role", "content"}, ...]}`: trained on the assistant turns.
    Messages(Vec<Message>),
    /// `{"input_ids": [...], "labels": [...]?}`: already tokenized. Ids are checked against the
    /// vocabulary when encoding.
    Tokens {
        input_ids: Vec<u64>,
        labels: Option<Vec<i64>>,
    },
}

impl Record {
    /// The record's shape, as its keys spell it.
    pub fn shape(&self) -> &'static str {
        match self {
            Record::Text(_) => "text",
            Record::PromptCompletion { .. } => "prompt/completion",
            Record::Messages(_) => "messages",
            Record::Tokens { .. } => "input_ids",
        }
    }
}

/// A record and the 1-based line it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub line: usize,
    pub record: Record,
}

/// Parses every line of a JSONL file. Returns the records, and a message for each bad line.
pub fn parse_jsonl(bytes: &[u8]) -> (Vec<Line>, Vec<(usize, String)>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(e) => {
                errors.push((
                    line,
                    format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
                ));
                continue;
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text) {
            Ok(record) => records.push(Line { line, record }),
            Err(msg) => errors.push((line, msg)),
        }
    }
    (records, errors)
}

/// Parses one line (not blank) into a record.
pub fn parse_line(text: &str) -> Result<Record, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON ({e})"))?;
    let Value::Object(obj) = value else {
        return Err(format!("expected a JSON object, found {}", kind(&value)));
    };
    let has = |k: &str| obj.contains_key(k);
    let mut shapes = Vec::new();
    if has("text") {
        shapes.push("\"text\"");
    }
    if has("prompt") || has("completion") {
        shapes.push("\"prompt\"/\"completion\"");
    }
    if has("messages") {
        shapes.push("\"messages\"");
    }
    if has("input_ids") {
        shapes.push("\"input_ids\"");
    }
    match shapes.as_slice() {
        [] if has("labels") => Err("\"labels\" without \"input_ids\"".into()),
        [] => {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            Err(format!(
                "no \"text\", \"prompt\"/\"completion\", \"messages\" or \"input_ids\" field \
                 (the record has {})",
                if keys.is_empty() {
                    "no keys".to_owned()
                } else {
                    format!("keys {}", keys.join(", "))
                }
            ))
        }
        [_] => parse_shape(&obj),
        _ => Err(format!(
            "ambiguous record: it has the fields of {} shapes ({}); use one",
            shapes.len(),
            shapes.join(" and ")
        )),
    }
}

fn parse_shape(obj: &Map<String, Value>) -> Result<Record, String> {
    if let Some(v) = obj.get("text") {
        return Ok(Record::Text(string(v, "\"text\"")?));
    }
    if obj.contains_key("prompt") || obj.contains_key("completion") {
        let field = |k: &str| match obj.get(k) {
            Some(v) => string(v, &format!("\"{k}\"")),
            None => Err(format!(
                "\"{}\" without \"{k}\"",
                if k == "prompt" {
                    "completion"
                } else {
                    "prompt"
                }
            )),
        };
        return Ok(Record::PromptCompletion {
            prompt: field("prompt")?,
            completion: field("completion")?,
        });
    }
    if let Some(v) = obj.get("messages") {
        return messages(v).map(Record::Messages);
    }
    let ids = obj.get("input_ids").ok_or("no \"input_ids\"")?;
    let input_ids = array(ids, "\"input_ids\"")?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64().ok_or_else(|| {
                format!("\"input_ids\"[{i}] must be a non-negative integer, found {v}")
            })
        })
        .collect::<Result<Vec<u64>, String>>()?;
    if input_ids.is_empty() {
        return Err("\"input_ids\" is empty".into());
    }
    let labels = match obj.get("labels") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let labels = array(v, "\"labels\"")?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_i64()
                        .ok_or_else(|| format!("\"labels\"[{i}] must be an integer, found {v}"))
                })
                .collect::<Result<Vec<i64>, String>>()?;
            if labels.len() != input_ids.len() {
                return Err(format!(
                    "\"labels\" has {} entries but \"input_ids\" has {}",
                    labels.len(),
                    input_ids.len()
                ));
            }
            Some(labels)
        }
    };
    Ok(Record::Tokens { input_ids, labels })
}

fn messages(v: &Value) -> Result<Vec<Message>, String> {
    let list = array(v, "\"messages\"")?;
    if list.is_empty() {
        return Err("\"messages\" is empty".into());
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("\"messages\"[{i}]");
            let Value::Object(m) = m else {
                return Err(format!("{at} must be an object, found {}", kind(m)));
            };
            if let Some(k) = m.keys().find(|k| *k != "role" && *k != "content") {
                return Err(format!(
                    "{at} has the key \"{k}\"; messages take only \"role\" and \"content\""
                ));
            }
            let role = string(
                m.get("role").ok_or(format!("{at} has no \"role\""))?,
                &format!("{at}.role"),
            )?;
            if !ROLES.contains(&role.as_str()) {
                return Err(format!(
                    "{at}.role is \"{role}\", expected one of {}",
                    ROLES.join(", ")
                ));
            }
            let content = string(
                m.get("content").ok_or(format!("{at} has no \"content\""))?,
                &format!("{at}.content"),
            )?;
            Ok(Message::new(role, content))
        })
        .collect()
}

fn string(v: &Value, what: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{what} must be a string, found {}", kind(v)))
}

fn array<'v>(v: &'v Value, what: &str) -> Result<&'v Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("{what} must be an array, found {}", kind(v)))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
