//! Is include/edgetune.h what cbindgen generates from src/capi today? (The committed header is
//! what C users build against; a stale one would silently disagree with the library.)
//! Regenerate it with `bash scripts/gen-header.sh`.

use std::path::Path;

const HEADER: &str = "include/edgetune.h";

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    // Only the ABI module's files: the rest of the crate has public constants that are not ABI.
    let mut builder = cbindgen::Builder::new().with_config(config);
    for f in ["mod.rs", "model.rs", "config.rs", "session.rs", "infer.rs"] {
        builder = builder.with_src(root.join("src/capi").join(f));
    }
    let bindings = builder.generate().expect("cbindgen failed on src/capi");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen wrote UTF-8")
}

#[test]
fn committed_header_matches_the_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(HEADER);
    let generated = generate();
    if std::env::var_os("EDGETUNE_UPDATE_HEADER").is_some() {
        let tmp = path.with_extension("h.tmp");
        std::fs::write(&tmp, &generated).expect("writing the header");
        std::fs::rename(&tmp, &path).expect("renaming the header into place");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{HEADER} is stale (or missing): it differs from what cbindgen generates from src/capi. \
         Update it with: bash scripts/gen-header.sh"
    );
}

#[test]
fn every_function_is_documented() {
    let h = generate();
    let lines: Vec<&str> = h.lines().collect();
    let mut declarations = 0;
    for (i, l) in lines.iter().enumerate() {
        let is_declaration = l.contains(" edgetune_") && l.trim_end().ends_with(");");
        if is_declaration && !l.trim_start().starts_with("//") {
            declarations += 1;
            let prev = lines[..i].iter().rev().find(|p| !p.trim().is_empty());
            assert!(
                prev.is_some_and(|p| p.trim_start().starts_with("//")),
                "{HEADER}: `{l}` has no doc comment"
            );
        }
    }
    assert!(
        declarations >= 25,
        "found only {declarations} function declarations"
    );
}
