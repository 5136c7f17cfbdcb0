//! The handle registry. A handle given to C is an id (1, 2, 3, ... never reused) disguised as a
//! pointer; C never dereferences it. Every call looks the id up here and gets a shared reference
//! to the object, so:
//! - a freed handle, a handle of another kind, or any pointer we did not hand out is an
//!   `EDGETUNE_STATUS_INVALID_HANDLE` error, not undefined behaviour (ids are never reused, so a
//!   stale handle cannot alias a newer object);
//! - freeing a handle while another thread is inside a call on it is safe: the object lives until
//!   that call returns, and later calls get the error.
//!
//! This registry (a mutex-guarded map, locked only for the lookup) is the library's one piece of
//! global state.

use super::Failure;
use super::{infer::InferenceObj, model::ModelObj, session::SessionObj, CResult, EdgetuneStatus};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub(crate) enum Object {
    Model(Arc<ModelObj>),
    Session(Arc<SessionObj>),
    Inference(Arc<InferenceObj>),
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::Model(_) => "a model",
            Object::Session(_) => "a session",
            Object::Inference(_) => "an inference context",
        }
    }
}

static REGISTRY: Mutex<BTreeMap<usize, Object>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> std::sync::MutexGuard<'static, BTreeMap<usize, Object>> {
    // Nothing panics while holding the lock; a poisoned map is still consistent.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers `obj` and returns its handle.
pub(crate) fn insert<H>(obj: Object) -> CResult<*mut H> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let id = usize::try_from(id)
        .map_err(|_| Failure::new(EdgetuneStatus::Internal, "handle ids exhausted"))?;
    registry().insert(id, obj);
    Ok(id as *mut H)
}

/// The object behind `handle`, which must be of the kind `want` names.
pub(crate) fn get<H>(handle: *const H, want: &'static str) -> CResult<Object> {
    if handle.is_null() {
        return Err(Failure::new(
            EdgetuneStatus::InvalidHandle,
            format!("{want} handle is NULL"),
        ));
    }
    let obj = registry().get(&(handle as usize)).cloned();
    match obj {
        Some(o) if o.kind() == want => Ok(o),
        Some(o) => Err(Failure::new(
            EdgetuneStatus::InvalidHandle,
            format!("expected {want} handle, got {}", o.kind()),
        )),
        None => Err(Failure::new(
            EdgetuneStatus::InvalidHandle,
            format!("{want} handle {handle:p} is not live (already freed, or not from edgetune)"),
        )),
    }
}

/// Unregisters `handle` (of kind `want`) and returns its object, dropped by the caller.
pub(crate) fn remove<H>(handle: *const H, want: &'static str) -> CResult<Object> {
    get(handle, want)?;
    registry().remove(&(handle as usize)).ok_or_else(|| {
        Failure::new(
            EdgetuneStatus::InvalidHandle,
            format!("{want} handle was freed concurrently"),
        )
    })
}

/// `get` checks the kind; this only answers if that check and the match ever disagree.
fn wrong_kind<H>(h: *const H) -> Failure {
    Failure::new(
        EdgetuneStatus::InvalidHandle,
        format!("handle {h:p} is of another kind"),
    )
}

pub(crate) const MODEL: &str = "a model";
pub(crate) const SESSION: &str = "a session";
pub(crate) const INFERENCE: &str = "an inference context";

pub(crate) fn model<H>(h: *const H) -> CResult<Arc<ModelObj>> {
    match get(h, MODEL)? {
        Object::Model(m) => Ok(m),
        _ => Err(wrong_kind(h)),
    }
}

pub(crate) fn session<H>(h: *const H) -> CResult<Arc<SessionObj>> {
    match get(h, SESSION)? {
        Object::Session(s) => Ok(s),
        _ => Err(wrong_kind(h)),
    }
}

pub(crate) fn inference<H>(h: *const H) -> CResult<Arc<InferenceObj>> {
    match get(h, INFERENCE)? {
        Object::Inference(i) => Ok(i),
        _ => Err(wrong_kind(h)),
    }
}
