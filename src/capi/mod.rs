//! The C ABI (`include/edgetune.h`, generated from this module by cbindgen; docs/capi.md): opaque
//! handles for a model, a training session and an inference context, a status code from every
//! call and a thread-local message for the last failure. It is a thin shell over the library —
//! `train::session::Session`, `infer`, `gguf::GgufFile` — and holds no logic of its own.
//!
//! Rules every entry point follows:
//! - it runs inside `catch_unwind`, so a panic becomes `EDGETUNE_STATUS_INTERNAL` (the library
//!   is built with `panic = "unwind"`, the default);
//! - a null or invalid argument is an error status, never a crash;
//! - handles are ids looked up in a registry (`handles`), so a freed, foreign or wrong-kind
//!   handle is an error status, not undefined behaviour;
//! - structs passed in start with `struct_size`, checked before anything else is read.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod config;
mod handles;
pub mod infer;
pub mod model;
pub mod session;

use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Version of the C ABI this library implements. It changes only when an existing function or
/// struct changes incompatibly; new functions and struct fields appended at the end (see
/// `struct_size`) keep it.
pub const EDGETUNE_ABI_VERSION: u32 = 1;

/// What a call did. Every function that can fail returns one; on anything but
/// `EDGETUNE_STATUS_OK`, `edgetune_last_error()` describes the failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgetuneStatus {
    /// Success.
    Ok = 0,
    /// A null pointer, an out-of-range value, a wrong `struct_size` or a bad config field.
    InvalidArgument = 1,
    /// The handle is null, was freed, or is of another kind (a session passed as a model).
    InvalidHandle = 2,
    /// A file could not be opened, read or written.
    Io = 3,
    /// A model file or buffer that is not valid GGUF, or a model we cannot read (tensors,
    /// tokenizer, chat template).
    Format = 4,
    /// Training data that cannot be used (the message names the line).
    Data = 5,
    /// A valid request this build does not support.
    Unsupported = 6,
    /// The call does not fit the object's state (data added after training started, a step
    /// after the last one, a session whose setup failed).
    State = 7,
    /// Another thread is using this session or inference context right now.
    Busy = 8,
    /// A bug in edgetune (a caught panic); the message says where.
    Internal = 9,
}

/// A failure on its way to the caller: a status and a message.
pub(crate) struct Failure {
    status: EdgetuneStatus,
    msg: String,
}

impl Failure {
    pub(crate) fn new(status: EdgetuneStatus, msg: impl Into<String>) -> Failure {
        Failure {
            status,
            msg: msg.into(),
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Failure {
        Failure::new(EdgetuneStatus::InvalidArgument, msg)
    }

    pub(crate) fn state(msg: impl Into<String>) -> Failure {
        Failure::new(EdgetuneStatus::State, msg)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::new(status_of(&e), e.to_string())
    }
}

fn status_of(e: &Error) -> EdgetuneStatus {
    match e {
        Error::Io { .. } => EdgetuneStatus::Io,
        Error::Gguf { .. } | Error::Quant(_) | Error::Tokenizer(_) | Error::ChatTemplate(_) => {
            EdgetuneStatus::Format
        }
        Error::Unsupported(_) => EdgetuneStatus::Unsupported,
        Error::InvalidArgument(_) => EdgetuneStatus::InvalidArgument,
        Error::Data { .. } => EdgetuneStatus::Data,
        Error::InFile { source, .. } => status_of(source),
    }
}

pub(crate) type CResult<T = ()> = std::result::Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(msg: String) {
    // A message with an interior NUL is cut there rather than lost.
    let msg = CString::new(msg).unwrap_or_else(|e| {
        let n = e.nul_position();
        let mut bytes = e.into_vec();
        bytes.truncate(n);
        CString::new(bytes).unwrap_or_default()
    });
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(msg));
}

/// Runs the body of an entry point: clears the thread's last error, catches panics, records a
/// failure's message and returns its status.
pub(crate) fn entry(body: impl FnOnce() -> CResult) -> EdgetuneStatus {
    LAST_ERROR.with(|l| *l.borrow_mut() = None);
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Failure::new(
            EdgetuneStatus::Internal,
            format!("internal error (please report): {what}"),
        ))
    });
    match outcome {
        Ok(()) => {
            // A call made from inside a callback may have set a message; this call succeeded.
            LAST_ERROR.with(|l| *l.borrow_mut() = None);
            EdgetuneStatus::Ok
        }
        Err(f) => {
            set_last_error(f.msg);
            f.status
        }
    }
}

/// A required C string argument as UTF-8.
///
/// # Safety
/// `s` is null or points to a NUL-terminated string.
pub(crate) unsafe fn c_str<'a>(s: *const c_char, what: &str) -> CResult<&'a str> {
    if s.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(s) };
    s.to_str()
        .map_err(|e| Failure::invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// An optional C string: NULL or "" is `None`.
///
/// # Safety
/// As `c_str`.
pub(crate) unsafe fn opt_c_str<'a>(s: *const c_char, what: &str) -> CResult<Option<&'a str>> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract, forwarded.
    let s = unsafe { c_str(s, what) }?;
    Ok((!s.is_empty()).then_some(s))
}

/// A required path argument.
///
/// # Safety
/// As `c_str`.
pub(crate) unsafe fn c_path(s: *const c_char, what: &str) -> CResult<PathBuf> {
    // SAFETY: the caller's contract, forwarded.
    let s = unsafe { c_str(s, what) }?;
    if s.is_empty() {
        return Err(Failure::invalid(format!("{what} is empty")));
    }
    Ok(PathBuf::from(s))
}

/// A `#[repr(C)]` struct whose first field is `uint32_t struct_size` and whose other fields are
/// plain numbers or pointers (any bit pattern is a valid value).
///
/// # Safety
/// Implementors must be `#[repr(C)]`, start with a `u32` size field, and have no field with
/// invalid bit patterns (no `bool`, no Rust `enum`, no references).
pub(crate) unsafe trait CStruct: Copy {
    /// `sizeof` at the ABI version that introduced the struct: the smallest size accepted.
    const MIN_SIZE: usize;
    const NAME: &'static str;
}

/// Checks `struct_size` and the pointer, then reads a caller's struct: fields past an older
/// caller's `struct_size` keep `default`.
///
/// # Safety
/// `ptr` is null or points to at least `struct_size` readable bytes whose first 4 are the size.
pub(crate) unsafe fn read_struct<T: CStruct>(ptr: *const T, default: T) -> CResult<T> {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{} pointer is NULL", T::NAME)));
    }
    // SAFETY: non-null; every accepted struct starts with a u32 the caller initialised.
    let size = unsafe { ptr.cast::<u32>().read_unaligned() } as usize;
    check_size::<T>(size)?;
    let mut out = default;
    // SAFETY: `size` bytes are readable (caller's contract) and fit in `out` (checked); every
    // bit pattern is valid for T's fields (`CStruct` contract).
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&mut out as *mut T).cast::<u8>(), size)
    };
    Ok(out)
}

/// Writes `value` into a caller's struct, at most its `struct_size` bytes (an older caller gets
/// the fields it knows), leaving its `struct_size` as it was.
///
/// # Safety
/// `ptr` is null or points to at least `struct_size` writable bytes whose first 4 are the size.
pub(crate) unsafe fn write_struct<T: CStruct>(ptr: *mut T, value: &T) -> CResult {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{} pointer is NULL", T::NAME)));
    }
    // SAFETY: non-null; the caller initialised the size field.
    let size = unsafe { ptr.cast::<u32>().read_unaligned() } as usize;
    check_size::<T>(size)?;
    // SAFETY: `size` bytes are writable (caller's contract); skipping the 4-byte size field.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (value as *const T).cast::<u8>().add(4),
            ptr.cast::<u8>().add(4),
            size - 4,
        )
    };
    Ok(())
}

/// Fills a caller's struct of `size` bytes with defaults and sets its `struct_size`.
///
/// # Safety
/// `ptr` is null or points to at least `size` writable bytes.
pub(crate) unsafe fn init_struct<T: CStruct>(ptr: *mut T, size: usize, default: T) -> CResult {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{} pointer is NULL", T::NAME)));
    }
    check_size::<T>(size)?;
    // SAFETY: `size` bytes are writable (caller's contract) and no more than `size_of::<T>()`.
    unsafe {
        std::ptr::copy_nonoverlapping((&default as *const T).cast::<u8>(), ptr.cast(), size);
        ptr.cast::<u32>().write_unaligned(size as u32);
    }
    Ok(())
}

/// Checks a caller's optional output struct before work is done (NULL passes).
///
/// # Safety
/// `ptr` is null or points to a struct whose first 4 bytes are its size.
pub(crate) unsafe fn check_out<T: CStruct>(ptr: *const T) -> CResult {
    if ptr.is_null() {
        return Ok(());
    }
    // SAFETY: non-null; the caller initialised the size field.
    check_size::<T>(unsafe { ptr.cast::<u32>().read_unaligned() } as usize)
}

fn check_size<T: CStruct>(size: usize) -> CResult {
    let max = std::mem::size_of::<T>();
    if size < T::MIN_SIZE || size > max {
        return Err(Failure::invalid(format!(
            "{}.struct_size is {size}; this library accepts {}..={max} bytes (set it to \
             sizeof({}) from the edgetune.h it was built with)",
            T::NAME,
            T::MIN_SIZE,
            T::NAME
        )));
    }
    Ok(())
}

/// Stores `value` through an out pointer.
///
/// # Safety
/// `out` is null or valid for writes.
pub(crate) unsafe fn put<T>(out: *mut T, value: T, what: &str) -> CResult {
    if out.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null and writable by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// The message of the last failed call on this thread, or "" if the last call succeeded.
///
/// The string is owned by the library and stays valid until the next edgetune call on the same
/// thread (every call but this one and `edgetune_version` clears or replaces it). Never NULL.
/// Thread-safe: each thread has its own message.
#[no_mangle]
pub extern "C" fn edgetune_last_error() -> *const c_char {
    catch_unwind(|| {
        LAST_ERROR.with(|l| match &*l.borrow() {
            Some(s) => s.as_ptr(),
            None => c"".as_ptr(),
        })
    })
    .unwrap_or(c"".as_ptr())
}

/// The library version ("MAJOR.MINOR.PATCH"), a static string: never freed, never NULL.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn edgetune_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// `EDGETUNE_ABI_VERSION` of the library actually linked; compare it with the header's
/// constant to detect a header/library mismatch. Thread-safe.
#[no_mangle]
pub extern "C" fn edgetune_abi_version() -> u32 {
    EDGETUNE_ABI_VERSION
}
