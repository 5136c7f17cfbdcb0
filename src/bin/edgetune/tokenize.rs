//! `edgetune tokenize MODEL [TEXT] [--jsonl FILE] [--add-special] [--json]`

use edgetune::gguf::GgufFile;
use edgetune::tokenizer::Tokenizer;
use edgetune::{Error, Result};
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(
    after_help = "Prints the ids Hugging Face's tokenizer gives for the same GGUF with \
add_special_tokens=False; special tokens written in the text (e.g. <|im_start|>) are recognised. \
Without TEXT and --jsonl the text is read from standard input."
)]
pub struct Args {
    /// The GGUF model whose tokenizer metadata to use (only the metadata is read).
    model: PathBuf,
    /// The text to tokenize.
    text: Option<String>,
    /// Read JSONL lines {"text": ...} and write one line {"ids": [...]} per input line.
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    jsonl: Option<PathBuf>,
    /// Add BOS/EOS as the model's metadata says.
    #[arg(long)]
    add_special: bool,
    /// Print {"ids": [...], "tokens": [...]} (token strings as in the vocabulary) instead of plain ids.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let file = GgufFile::open(&args.model)?;
    let tok = Tokenizer::from_gguf(file.header()).map_err(|e| e.in_file(&args.model))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let io = |e| Error::io("writing to standard output", e);
    if let Some(path) = &args.jsonl {
        let f = std::fs::File::open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut reader = std::io::BufReader::new(f);
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let at = |msg: String| {
                Error::InvalidArgument(format!("{}:{line_no}: {msg}", path.display()))
            };
            let line = std::str::from_utf8(&buf).map_err(|e| at(format!("invalid UTF-8 ({e})")))?;
            if line.trim().is_empty() {
                return Err(at(
                    "empty line (expected a JSON object with a \"text\" string)".into(),
                ));
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("invalid JSON ({e})")))?;
            let text = v
                .get("text")
                .and_then(|t| t.as_str())
                .ok_or_else(|| at("expected a JSON object with a \"text\" string".into()))?;
            let ids = tok
                .encode(text, args.add_special)
                .map_err(|e| at(e.to_string()))?;
            writeln!(out, "{}", serde_json::json!({ "ids": ids })).map_err(io)?;
        }
        return out.flush().map_err(io);
    }
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io("reading standard input", e))?;
            String::from_utf8(bytes).map_err(|e| {
                Error::InvalidArgument(format!("standard input is not valid UTF-8 ({e})"))
            })?
        }
    };
    let ids = tok.encode(&text, args.add_special)?;
    if args.json {
        let tokens: Vec<String> = ids
            .iter()
            .map(|&i| tok.token_text(i).unwrap_or_default())
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({ "ids": ids, "tokens": tokens })
        )
        .map_err(io)?;
    } else {
        let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        writeln!(out, "{}", s.join(" ")).map_err(io)?;
    }
    out.flush().map_err(io)
}
