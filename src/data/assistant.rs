//! Which tokens of a rendered conversation belong to the assistant.
//!
//! A template with `{% generation %}` … `{% endgeneration %}` markers says it itself: the text a
//! marker pair encloses is assistant text, and a token is trained when it overlaps that text.
//! This is transformers' `apply_chat_template(..., return_assistant_tokens_mask=True)` (the
//! one-pass overlap rule of `tokenization_utils_base.py`). minijinja has no `generation` tag, so
//! each marker becomes an `{% if true %}` block (keeping the tag's whitespace control) that
//! prints a noncharacter (U+FDD0 / U+FDD1); the rendered text is read back without them.
//!
//! A template without markers (SmolLM2's, most GGUF files) gets this rule: for assistant message
//! `i`, the trained text starts where the conversation rendered up to message `i` with the
//! generation prompt stops agreeing with the whole conversation (TRL's common-prefix rule for
//! prompt/completion), and ends where message `i` ends; tokens overlapping it are trained, up to
//! and including the last end-of-generation token (`<|im_end|>`, `<|eot_id|>`...) among them.
//! For ChatML that is the content and `<|im_end|>`, not the `<|im_start|>assistant\n` header and
//! not the newline after `<|im_end|>`: the tokens the model writes after the generation prompt.

use crate::chat::{ChatTemplate, Message, TemplateTokens};
use crate::error::{Error, Result};
use crate::gguf::Header;
use crate::tokenizer::{meta, Tokenizer};

const OPEN: char = '\u{FDD0}';
const CLOSE: char = '\u{FDD1}';

/// A model's chat template, ready to find assistant tokens.
#[derive(Debug)]
pub struct ChatFormat {
    /// Compiled from the source with the generation markers rewritten (if it has any).
    template: ChatTemplate,
    marked: bool,
}

/// A tokenized conversation and, per token, whether it is trained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedTokens {
    pub ids: Vec<u32>,
    pub trained: Vec<bool>,
}

impl ChatFormat {
    /// Compiles `source` (Jinja), with or without generation markers.
    pub fn new(source: &str, tokens: TemplateTokens) -> Result<ChatFormat> {
        let (rewritten, marked) = rewrite_generation_tags(source);
        Ok(ChatFormat {
            template: ChatTemplate::new(&rewritten, tokens)?,
            marked,
        })
    }

    /// The model's template, or `None` when its metadata has none.
    pub fn from_gguf(header: &Header) -> Result<Option<ChatFormat>> {
        match meta::chat_template(header)? {
            Some(source) => Ok(Some(ChatFormat::new(
                source,
                TemplateTokens::from_gguf(header)?,
            )?)),
            None => Ok(None),
        }
    }

    /// Whether the template marks assistant text with `{% generation %}`.
    pub fn has_generation_markers(&self) -> bool {
        self.marked
    }

    /// The conversation as transformers' `apply_chat_template(tokenize=False)` renders it.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        Ok(self.render_spans(messages, add_generation_prompt)?.0)
    }

    /// Renders and returns the generation spans, in chars of the text without markers.
    fn render_spans(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<(usize, usize)>)> {
        let raw = self.template.render(messages, add_generation_prompt)?;
        if !self.marked {
            return Ok((raw, Vec::new()));
        }
        let mut text = String::with_capacity(raw.len());
        let mut spans = Vec::new();
        let (mut chars, mut open) = (0usize, None);
        for c in raw.chars() {
            match (c, open) {
                (OPEN, None) => open = Some(chars),
                (CLOSE, Some(start)) => {
                    spans.push((start, chars));
                    open = None;
                }
                (OPEN | CLOSE, _) => {
                    return Err(Error::ChatTemplate(
                        "unbalanced {% generation %} / {% endgeneration %} in the rendered \
                         conversation"
                            .into(),
                    ))
                }
                _ => {
                    text.push(c);
                    chars += 1;
                }
            }
        }
        if open.is_some() {
            return Err(Error::ChatTemplate(
                "a {% generation %} block is never closed".into(),
            ));
        }
        Ok((text, spans))
    }

    /// Tokenizes the conversation (`add_special_tokens=False`, as `apply_chat_template` does)
    /// and marks the assistant tokens, or every token when `assistant_only` is false.
    pub fn encode(
        &self,
        tok: &Tokenizer,
        messages: &[Message],
        assistant_only: bool,
    ) -> Result<MaskedTokens> {
        if self.marked {
            for (i, m) in messages.iter().enumerate() {
                if m.content.contains([OPEN, CLOSE]) {
                    return Err(Error::InvalidArgument(format!(
                        "message {i} contains U+FDD0 or U+FDD1, which mark assistant text while \
                         rendering"
                    )));
                }
            }
        }
        let (text, mut spans) = self.render_spans(messages, false)?;
        let enc = tok
            .hf()
            .encode_char_offsets(text.as_str(), false)
            .map_err(|e| Error::Tokenizer(format!("encoding a conversation: {e}")))?;
        let ids = enc.get_ids().to_vec();
        if !assistant_only {
            let trained = vec![true; ids.len()];
            return Ok(MaskedTokens { ids, trained });
        }
        let offsets = enc.get_offsets();
        let mut trained = vec![false; ids.len()];
        if self.marked {
            mark_overlapping(offsets, &spans, &mut trained);
            return Ok(MaskedTokens { ids, trained });
        }
        spans = self.assistant_spans(messages, &text)?;
        for span in spans {
            let mut one = vec![false; ids.len()];
            mark_overlapping(offsets, &[span], &mut one);
            let (Some(first), Some(last)) =
                (one.iter().position(|&t| t), one.iter().rposition(|&t| t))
            else {
                continue;
            };
            let end = (first..=last)
                .rev()
                .find(|&k| tok.is_end_of_generation(ids[k]))
                .unwrap_or(last);
            trained[first..=end].iter_mut().for_each(|t| *t = true);
        }
        Ok(MaskedTokens { ids, trained })
    }

    /// The char span of each assistant message in `full` (a template without markers).
    fn assistant_spans(&self, messages: &[Message], full: &str) -> Result<Vec<(usize, usize)>> {
        let mut spans = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            if i == 0 {
                return Err(Error::InvalidArgument(
                    "message 0 is an assistant message with nothing before it; without \
                     {% generation %} markers in the chat template its tokens cannot be told \
                     apart from the template's opening (add a system or user message first)"
                        .into(),
                ));
            }
            let before = self.render(&messages[..i], false)?;
            let prompt = self.render(&messages[..i], true)?;
            let through = self.render(&messages[..=i], false)?;
            let start = common_prefix_chars(&prompt, full);
            if !full.starts_with(&before) || start < before.chars().count() {
                return Err(Error::InvalidArgument(format!(
                    "the chat template renders the messages before message {i} differently \
                     once more messages follow, so the assistant tokens cannot be located; \
                     add {{% generation %}} markers to the template"
                )));
            }
            if !full.starts_with(&through) {
                return Err(Error::InvalidArgument(format!(
                    "the chat template renders assistant message {i} differently once more \
                     messages follow, so its tokens cannot be located; add {{% generation %}} \
                     markers to the template"
                )));
            }
            spans.push((start, through.chars().count()));
        }
        Ok(spans)
    }
}

/// transformers' rule: token `t` is marked when it overlaps a span (`end > span.start` and
/// `start < span.end`), found in one pass since tokens and spans are both in order.
fn mark_overlapping(offsets: &[(usize, usize)], spans: &[(usize, usize)], out: &mut [bool]) {
    let mut s = 0;
    for (t, &(start, end)) in offsets.iter().enumerate() {
        while s < spans.len() && start >= spans[s].1 {
            s += 1;
        }
        if s == spans.len() {
            break;
        }
        if end > spans[s].0 {
            out[t] = true;
        }
    }
}

fn common_prefix_chars(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// Replaces `{% generation %}` / `{% endgeneration %}` (any `-`/`+` whitespace control) by
/// blocks that print the markers. Returns the new source and whether any tag was found.
fn rewrite_generation_tags(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len() + 64);
    let mut found = false;
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        match parse_marker_tag(tag) {
            Some((len, left, right, close)) => {
                let mark = if close { CLOSE } else { OPEN };
                out.push_str(&format!(
                    "{{%{left} if true %}}{{{{ \"{mark}\" }}}}{{% endif {right}%}}"
                ));
                found = true;
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    (out, found)
}

/// If `s` starts with a generation tag, its length, whitespace controls and whether it closes.
fn parse_marker_tag(s: &str) -> Option<(usize, &str, &str, bool)> {
    let body = s.strip_prefix("{%")?;
    let (left, body) = match body.chars().next()? {
        c @ ('-' | '+') => (&s[2..2 + c.len_utf8()], &body[1..]),
        _ => ("", body),
    };
    let trimmed = body.trim_start();
    let (close, after) = if let Some(a) = trimmed.strip_prefix("endgeneration") {
        (true, a)
    } else {
        (false, trimmed.strip_prefix("generation")?)
    };
    let after_ws = after.trim_start();
    if after_ws.len() == after.len() && !after_ws.starts_with(['-', '+', '%']) {
        return None; // a longer name, e.g. `generation_prompt`
    }
    let (right, end) = match after_ws.chars().next()? {
        c @ ('-' | '+') => (&after_ws[..1], &after_ws[c.len_utf8()..]),
        _ => ("", after_ws),
    };
    end.strip_prefix("%}")?;
    let len = s.len() - end.len() + 2;
    Some((len, left, right, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_tags_with_their_whitespace_control() {
        let (s, found) = rewrite_generation_tags(
            "a{% generation %}b{%- endgeneration -%}c{%+generation+%}{% endgeneration%}",
        );
        assert!(found);
        assert_eq!(
            s,
            "a{% if true %}{{ \"\u{FDD0}\" }}{% endif %}b{%- if true %}{{ \"\u{FDD1}\" }}\
             {% endif -%}c{%+ if true %}{{ \"\u{FDD0}\" }}{% endif +%}\
             {% if true %}{{ \"\u{FDD1}\" }}{% endif %}"
        );
    }

    #[test]
    fn leaves_other_tags_alone() {
        for src in [
            "{% if generation %}x{% endif %}",
            "{% generation_prompt %}",
            "{% set x = 1 %}{{ x }}",
            "{%",
            "{% generation",
        ] {
            let (s, found) = rewrite_generation_tags(src);
            assert_eq!((s.as_str(), found), (src, false), "{src}");
        }
    }

    #[test]
    fn overlap_marks_tokens_touching_spans() {
        let offsets = [(0, 2), (2, 5), (5, 6), (6, 9), (9, 10)];
        let mut out = [false; 5];
        mark_overlapping(&offsets, &[(3, 6), (9, 9)], &mut out);
        assert_eq!(out, [false, true, true, false, false]);
    }
}
