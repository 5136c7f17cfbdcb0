//! Does the C ABI turn bad calls into error statuses (never a crash), with a message? Calls the
//! `extern "C"` functions from Rust without a real model: NULLs, wrong struct sizes, handles that
//! were never issued or were freed, a missing file, corrupt buffers. (The full C-driven test with
//! a model is examples/c/abi_test.c, run by scripts/capi-test.sh.)

use edgetune::capi::config::*;
use edgetune::capi::infer::*;
use edgetune::capi::model::*;
use edgetune::capi::session::*;
use edgetune::capi::*;
use std::ffi::{c_char, CStr};
use std::ptr::{null, null_mut};

fn last_error() -> String {
    // SAFETY: edgetune_last_error never returns NULL and the string is valid until the next call.
    unsafe { CStr::from_ptr(edgetune_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn expect(got: EdgetuneStatus, want: EdgetuneStatus) {
    assert_eq!(got, want, "last error: {}", last_error());
    if want != EdgetuneStatus::Ok {
        assert!(!last_error().is_empty(), "{want:?} without a message");
    } else {
        assert!(last_error().is_empty());
    }
}

fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

#[test]
fn versions_are_consistent() {
    assert_eq!(edgetune_abi_version(), EDGETUNE_ABI_VERSION);
    // SAFETY: a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(edgetune_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn bad_model_arguments_are_errors() {
    use EdgetuneStatus::*;
    let mut model: *mut EdgetuneModel = null_mut();
    unsafe {
        expect(edgetune_model_open(null(), &mut model), InvalidArgument);
        let missing = cstr("/nonexistent/model.gguf");
        expect(edgetune_model_open(missing.as_ptr(), &mut model), Io);
        expect(
            edgetune_model_open(missing.as_ptr(), null_mut()),
            InvalidArgument,
        );
        let garbage = b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xffjunk";
        expect(
            edgetune_model_open_memory(garbage.as_ptr().cast(), garbage.len(), &mut model),
            Format,
        );
        expect(
            edgetune_model_open_memory(null(), 4, &mut model),
            InvalidArgument,
        );
        assert!(model.is_null());
        let mut info: EdgetuneModelInfo = std::mem::zeroed();
        info.struct_size = std::mem::size_of::<EdgetuneModelInfo>() as u32;
        expect(edgetune_model_info(null(), &mut info), InvalidHandle);
        expect(
            edgetune_model_info(12345 as *const _, &mut info),
            InvalidHandle,
        );
        expect(edgetune_model_free(987654 as *mut _), InvalidHandle);
        expect(edgetune_model_free(null_mut()), Ok);
    }
}

#[test]
fn struct_sizes_are_checked() {
    use EdgetuneStatus::*;
    let full = std::mem::size_of::<EdgetuneTrainConfig>();
    let mut cfg: EdgetuneTrainConfig = unsafe { std::mem::zeroed() };
    unsafe {
        expect(edgetune_train_config_init(&mut cfg, 4), InvalidArgument);
        expect(
            edgetune_train_config_init(&mut cfg, full + 8),
            InvalidArgument,
        );
        expect(
            edgetune_train_config_init(null_mut(), full),
            InvalidArgument,
        );
        expect(edgetune_train_config_init(&mut cfg, full), Ok);
    }
    assert_eq!(cfg.struct_size as usize, full);
    assert_eq!((cfg.rank, cfg.seq_len, cfg.seed), (8, 512, 42));
    let mut g: EdgetuneGenerateConfig = unsafe { std::mem::zeroed() };
    unsafe {
        expect(edgetune_generate_config_init(&mut g, 3), InvalidArgument);
        expect(
            edgetune_generate_config_init(&mut g, std::mem::size_of_val(&g)),
            Ok,
        );
    }
    assert_eq!(g.max_tokens, 128);
}

#[test]
fn unknown_handles_are_errors_everywhere() {
    use EdgetuneStatus::*;
    let s = 424242 as *mut EdgetuneSession;
    let i = 434343 as *mut EdgetuneInference;
    let path = cstr("x");
    let mut dir: *const c_char = null();
    let mut n = 0u32;
    unsafe {
        expect(
            edgetune_session_add_data_file(s, path.as_ptr()),
            InvalidHandle,
        );
        expect(
            edgetune_session_add_data_jsonl(s, path.as_ptr(), 1),
            InvalidHandle,
        );
        expect(
            edgetune_session_load_checkpoint(s, path.as_ptr()),
            InvalidHandle,
        );
        expect(edgetune_session_start(s), InvalidHandle);
        expect(edgetune_session_step(s, null_mut()), InvalidHandle);
        expect(
            edgetune_session_run(s, None, null_mut(), null_mut()),
            InvalidHandle,
        );
        expect(edgetune_session_request_stop(s), InvalidHandle);
        expect(edgetune_session_save_checkpoint(s, &mut dir), InvalidHandle);
        expect(
            edgetune_session_save_adapter(s, path.as_ptr()),
            InvalidHandle,
        );
        expect(edgetune_session_free(s), InvalidHandle);
        expect(
            edgetune_session_new(null(), null(), null_mut()),
            InvalidHandle,
        );
        expect(edgetune_inference_new(null(), 1, null_mut()), InvalidHandle);
        expect(edgetune_inference_load_adapter(i, null()), InvalidHandle);
        expect(
            edgetune_generate(i, path.as_ptr(), null(), None, null_mut(), &mut n),
            InvalidHandle,
        );
        expect(edgetune_inference_free(i), InvalidHandle);
    }
}
