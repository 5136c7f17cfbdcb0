//! Chat templates: the Jinja template a model ships in `tokenizer.chat_template`, rendered the way
//! transformers' `apply_chat_template(messages, tokenize=False)` renders it.
//!
//! The environment mirrors transformers' (`utils/chat_template_utils.py`): `trim_blocks` and
//! `lstrip_blocks` on, loop controls, `raise_exception`, `strftime_now`, a `tojson` that writes
//! what Python's `json.dumps` writes, Python string/dict/list methods (`.strip()`, `.items()`...),
//! and the variables `messages`, `tools` and `documents` (none), `add_generation_prompt`, and the
//! tokenizer's `bos_token`, `eos_token`, `unk_token`, `pad_token`.

use crate::error::{Error, Result};
use crate::gguf::Header;
use crate::tokenizer::meta::{self, TokenizerMeta};
use minijinja::value::{Kwargs, Rest, Serde, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

const NAME: &str = "chat_template";

/// One chat message with text content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The special-token strings a template can refer to (transformers' `special_tokens_map`);
/// `None` leaves the variable undefined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    pub pad_token: Option<String>,
}

impl TemplateTokens {
    /// The strings of the file's bos/eos/unk/pad token ids.
    pub fn from_gguf(header: &Header) -> Result<TemplateTokens> {
        let m = TokenizerMeta::from_header(header)?;
        let text = |id: Option<u32>| id.map(|i| m.tokens[i as usize].clone());
        Ok(TemplateTokens {
            bos_token: text(m.bos),
            eos_token: text(m.eos),
            unk_token: text(m.unk),
            pad_token: text(m.pad),
        })
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    tokens: TemplateTokens,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

fn template_error(e: minijinja::Error) -> Error {
    // `{:#}` adds the template source around the failing line, which helps with real templates.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::ChatTemplate(msg)
}

impl ChatTemplate {
    /// The template stored in the file, with the file's special-token strings. A model without
    /// `tokenizer.chat_template` is an error that says so.
    pub fn from_gguf(header: &Header) -> Result<ChatTemplate> {
        let source = meta::chat_template(header)?.ok_or_else(|| {
            Error::ChatTemplate(
                "the model has no chat template (no tokenizer.chat_template in its metadata); \
                 format the prompt yourself or use a model with a template"
                    .into(),
            )
        })?;
        ChatTemplate::new(source, TemplateTokens::from_gguf(header)?)
    }

    /// Compiles `source` (Jinja) for rendering with `tokens`.
    pub fn new(source: &str, tokens: TemplateTokens) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(template_error)?,
        );
        env.set_unknown_method_callback(python_methods);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_filter("escape", html_escape);
        env.add_filter("e", html_escape);
        env.set_formatter(py_formatter);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(template_error)?;
        Ok(ChatTemplate { env, tokens })
    }

    pub fn tokens(&self) -> &TemplateTokens {
        &self.tokens
    }

    /// Renders a conversation of text messages.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_value(Value::from(Serde(messages)), add_generation_prompt)
    }

    /// Renders a conversation given as JSON text: an array of message objects whose content is
    /// a string or a list of parts, as the template expects. Object keys keep their order (as
    /// Python dicts do), which shows when a template iterates a dict or applies `tojson`.
    pub fn render_json_str(&self, messages: &str, add_generation_prompt: bool) -> Result<String> {
        let value: Value = serde_json::from_str(messages)
            .map_err(|e| Error::ChatTemplate(format!("messages are not valid JSON: {e}")))?;
        self.render_value(value, add_generation_prompt)
    }

    /// Renders a conversation given as a parsed JSON array. Object keys come in the order
    /// `serde_json` keeps them (sorted); use `render_json_str` where the order matters.
    pub fn render_json(&self, messages: &Json, add_generation_prompt: bool) -> Result<String> {
        self.render_value(Value::from(Serde(messages)), add_generation_prompt)
    }

    /// Like transformers: keys whose value is null are dropped, a message's reasoning is also
    /// offered as `reasoning_content` and `thinking`, and an empty conversation is refused.
    fn render_value(&self, messages: Value, add_generation_prompt: bool) -> Result<String> {
        if messages.kind() != ValueKind::Seq {
            return Err(Error::ChatTemplate(
                "messages must be an array of message objects".into(),
            ));
        }
        let list: Vec<Value> = messages.try_iter().map_err(template_error)?.collect();
        if list.is_empty() {
            return Err(Error::ChatTemplate(
                "cannot apply a chat template to an empty conversation".into(),
            ));
        }
        let normalized = list
            .iter()
            .enumerate()
            .map(|(i, m)| normalize_message(i, m))
            .collect::<Result<Vec<Value>>>()?;
        let t = &self.tokens;
        let token = |s: &Option<String>| s.as_deref().map_or(Value::UNDEFINED, Value::from);
        let ctx = minijinja::context! {
            messages => Value::from(normalized),
            tools => Value::from(()),
            documents => Value::from(()),
            add_generation_prompt => add_generation_prompt,
            bos_token => token(&t.bos_token),
            eos_token => token(&t.eos_token),
            unk_token => token(&t.unk_token),
            pad_token => token(&t.pad_token),
        };
        let template = self.env.get_template(NAME).map_err(template_error)?;
        template.render(ctx).map_err(template_error)
    }
}

/// An ordered map for building template values (serialized entry by entry, so the engine's
/// insertion-ordered map keeps this order).
struct OrderedMap(Vec<(String, Value)>);

impl Serialize for OrderedMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// transformers' `_normalize_chat_messages` and `_alias_reasoning_fields` for one message.
fn normalize_message(i: usize, m: &Value) -> Result<Value> {
    if m.kind() != ValueKind::Map {
        return Err(Error::ChatTemplate(format!(
            "message {i} is not an object: {m}"
        )));
    }
    let mut entries: Vec<(String, Value)> = Vec::new();
    for key in m.try_iter().map_err(template_error)? {
        let value = m.get_item(&key).map_err(template_error)?;
        if !value.is_none() {
            entries.push((key.to_string(), value));
        }
    }
    let get = |entries: &[(String, Value)], k: &str| {
        entries
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let reasoning = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|k| get(&entries, k));
    if let Some(r) = reasoning {
        // {"thinking": r, **message, "reasoning_content": r}
        if get(&entries, "thinking").is_none() {
            entries.insert(0, ("thinking".into(), r.clone()));
        }
        match entries.iter_mut().find(|(k, _)| k == "reasoning_content") {
            Some(e) => e.1 = r,
            None => entries.push(("reasoning_content".into(), r)),
        }
    }
    Ok(Value::from(Serde(OrderedMap(entries))))
}

/// Jinja2's `escape` (markupsafe): `&<>'"` as `&amp; &lt; &gt; &#39; &#34;`.
fn html_escape(value: &Value) -> Value {
    let text = match value.as_str() {
        Some(s) => s.to_owned(),
        None => py_repr(value),
    };
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    Value::from_safe_string(out)
}

/// Python methods on template values (`'a b'.split()`, `d.items()`...): minijinja-contrib's
/// pycompat, with `str.title` following Python (a word starts after any uncased character).
fn python_methods(
    state: &mut minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    if let (Some(s), "title", []) = (value.as_str(), method, args) {
        let mut out = String::with_capacity(s.len());
        let mut prev_cased = false;
        for c in s.chars() {
            if prev_cased {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_cased = c.is_lowercase() || c.is_uppercase();
        }
        return Ok(Value::from(out));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Prints values as Jinja2 does under Python: `True`, `None`, `1e+16`, `['a', 1]`.
fn py_formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &Value,
) -> std::result::Result<(), minijinja::Error> {
    let text = match value.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Seq | ValueKind::Map => py_repr(value),
        ValueKind::Number if !value.is_integer() => py_repr(value),
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(&text).map_err(|_| {
        minijinja::Error::new(ErrorKind::WriteFailure, "writing the rendered template")
    })
}

/// Python's `repr` of a template value (`str` for the top level is the same except strings).
fn py_repr(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => (if v.is_true() { "True" } else { "False" }).into(),
        ValueKind::Number if v.is_integer() => v.to_string(),
        ValueKind::Number => f64::try_from(v.clone())
            .map(py_float_repr_inf)
            .unwrap_or_else(|_| v.to_string()),
        ValueKind::String => py_str_repr(v.as_str().unwrap_or("")),
        ValueKind::Seq => {
            let items: Vec<String> = v
                .try_iter()
                .map(|it| it.map(|x| py_repr(&x)).collect())
                .unwrap_or_default();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let items: Vec<String> = v
                .try_iter()
                .map(|it| {
                    it.map(|k| {
                        let val = v.get_item(&k).unwrap_or(Value::UNDEFINED);
                        format!("{}: {}", py_repr(&k), py_repr(&val))
                    })
                    .collect()
                })
                .unwrap_or_default();
            format!("{{{}}}", items.join(", "))
        }
        _ => v.to_string(),
    }
}

/// Python's float repr, with `inf`/`nan` spelled as Python prints them (not as JSON does).
fn py_float_repr_inf(f: f64) -> String {
    match f {
        f if f.is_nan() => "nan".into(),
        f if f.is_infinite() => (if f > 0.0 { "inf" } else { "-inf" }).into(),
        f => py_float_repr(f),
    }
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double one;
/// escapes for the quote, backslash, `\n \r \t` and other control characters.
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_printable(c) => {
                let n = c as u32;
                let esc = match n {
                    0..=0xff => format!("\\x{n:02x}"),
                    0x100..=0xffff => format!("\\u{n:04x}"),
                    _ => format!("\\U{n:08x}"),
                };
                out.push_str(&esc);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable` for the characters chat text meets: controls, format characters
/// and separators other than the space are not printable (unassigned code points are not
/// checked).
fn py_printable(c: char) -> bool {
    let n = c as u32;
    !(n < 0x20
        || (0x7f..=0xa0).contains(&n)
        || n == 0xad
        || n == 0x1680
        || (0x2000..=0x200f).contains(&n)
        || (0x2028..=0x202f).contains(&n)
        || (0x205f..=0x2064).contains(&n)
        || n == 0x3000
        || n == 0xfeff
        || (0xd800..=0xf8ff).contains(&n)
        || (0xf0000..=0x10ffff).contains(&n))
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime_utc(now, &format)
}

/// `time.strftime(format)` for a UTC time given as Unix seconds (the directives chat
/// templates use: `%d %b %Y`, `%B`, `%A`, `%H:%M:%S`, glibc's `%-d`...). Unknown directives
/// are kept as written. transformers uses local time; on a device we use UTC.
pub fn strftime_utc(unix_secs: i64, format: &str) -> String {
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = before[month as usize - 1] + day + i64::from(leap && month > 2);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let num = |v: i64, width: usize| {
            if unpadded {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let s = match d {
            'a' => DAYS[weekday][..3].to_owned(),
            'A' => DAYS[weekday].to_owned(),
            'b' | 'h' => MONTHS[month as usize - 1][..3].to_owned(),
            'B' => MONTHS[month as usize - 1].to_owned(),
            'd' => num(day, 2),
            'e' => format!("{day:2}"),
            'H' => num(hour, 2),
            'I' => num(hour12, 2),
            'j' => num(yday, 3),
            'm' => num(month, 2),
            'M' => num(minute, 2),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_owned(),
            'S' => num(second, 2),
            'u' => (if weekday == 0 { 7 } else { weekday }).to_string(),
            'w' => weekday.to_string(),
            'y' => num(year.rem_euclid(100), 2),
            'Y' => year.to_string(),
            'F' => format!("{year}-{month:02}-{day:02}"),
            'T' => format!("{hour:02}:{minute:02}:{second:02}"),
            'Z' => "UTC".to_owned(),
            'z' => "+0000".to_owned(),
            '%' => "%".to_owned(),
            other => format!("%{}{other}", if unpadded { "-" } else { "" }),
        };
        out.push_str(&s);
    }
    out
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, options by keyword or in that order.
fn tojson(
    value: &Value,
    args: Rest<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let positional = |i: usize, name: &str| -> std::result::Result<Value, minijinja::Error> {
        match (args.get(i), kwargs.get::<Option<Value>>(name)?) {
            (_, Some(v)) => Ok(v),
            (Some(v), None) => Ok(v.clone()),
            (None, None) => Ok(Value::from(())),
        }
    };
    if args.len() > 4 {
        return Err(minijinja::Error::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 arguments",
        ));
    }
    let ensure_ascii = positional(0, "ensure_ascii")?.is_true();
    let indent = positional(1, "indent")?;
    let separators = positional(2, "separators")?;
    let sort_keys = positional(3, "sort_keys")?.is_true();
    kwargs.assert_all_used()?;
    let indent = match indent.kind() {
        ValueKind::None | ValueKind::Undefined => None,
        ValueKind::String => Some(indent.as_str().unwrap_or("").to_owned()),
        _ => Some(" ".repeat(indent.as_usize().unwrap_or(0))),
    };
    let (item_sep, key_sep) = match separators.kind() {
        ValueKind::None | ValueKind::Undefined => (
            if indent.is_some() { "," } else { ", " }.to_owned(),
            ": ".to_owned(),
        ),
        _ => {
            let parts: Vec<Value> = separators.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] => (a.to_string(), b.to_string()),
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson separators must be a pair of strings",
                    ))
                }
            }
        }
    };
    let opts = JsonOpts {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    write_json(value, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn not_serializable(v: &Value) -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "tojson: a value of kind {} is not JSON serializable",
            v.kind()
        ),
    )
}

fn write_json(
    v: &Value,
    o: &JsonOpts,
    level: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => out.push_str(&v.to_string()),
        ValueKind::Number => {
            let f = f64::try_from(v.clone()).map_err(|_| not_serializable(v))?;
            out.push_str(&py_float_repr(f));
        }
        ValueKind::String => write_json_str(v.as_str().unwrap_or(""), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, o, level, '[', ']', items.len(), |i, out| {
                write_json(&items[i], o, level + 1, out)
            })?;
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in v.try_iter()? {
                let item = v.get_item(&key)?;
                let key = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or("").to_owned(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
                    ValueKind::Number => key.to_string(),
                    _ => return Err(not_serializable(&key)),
                };
                entries.push((key, item));
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, o, level, '{', '}', entries.len(), |i, out| {
                write_json_str(&entries[i].0, o.ensure_ascii, out);
                out.push_str(&o.key_sep);
                write_json(&entries[i].1, o, level + 1, out)
            })?;
        }
        _ => return Err(not_serializable(v)),
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    o: &JsonOpts,
    level: usize,
    open: char,
    close: char,
    n: usize,
    mut item: impl FnMut(usize, &mut String) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    if n == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..n {
        if i > 0 {
            out.push_str(&o.item_sep);
        }
        if let Some(ind) = &o.indent {
            out.push('\n');
            out.push_str(&ind.repeat(level + 1));
        }
        item(i, out)?;
    }
    if let Some(ind) = &o.indent {
        out.push('\n');
        out.push_str(&ind.repeat(level));
    }
    out.push(close);
    Ok(())
}

/// A JSON string literal as Python's `json.dumps` writes it.
fn write_json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7E) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation below 1e-4 or from
/// 1e16 on, always a `.0` or exponent so it reads back as a float.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1; // position of the decimal point relative to the digits
    if (-4 < decpt && decpt <= 16) || digits.is_empty() {
        let n = digits.len() as i32;
        let body = if decpt <= 0 {
            format!("0.{}{digits}", "0".repeat((-decpt) as usize))
        } else if decpt >= n {
            format!("{digits}{}.0", "0".repeat((decpt - n) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..decpt as usize],
                &digits[decpt as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let frac = &digits[1..];
        let dot = if frac.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{}{dot}{frac}e{esign}{:02}", &digits[..1], exp.abs())
    }
}
