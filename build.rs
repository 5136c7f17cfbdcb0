// Build-time work only: nothing yet beyond declaring inputs. Later: the C header (cbindgen) and
// shaders, each with its own rerun-if-changed line.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
