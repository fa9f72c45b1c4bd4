//! Guard against GPU device pointers (contract §1.9, W9): until device memory is supported,
//! a pointer that the CUDA driver reports as device memory is refused with -600 instead of
//! being dereferenced on the CPU (which would crash the process).
//!
//! The driver is consulted only when `libcuda.so.1` is already loaded in the process (a
//! process that never loaded it cannot hold device pointers), so host-only workloads create no
//! CUDA state. Regions registered successfully as host memory are remembered and skip the query.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// `CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr)`.
type PointerGetAttribute = unsafe extern "C" fn(*mut c_void, c_int, u64) -> c_int;

const CU_POINTER_ATTRIBUTE_MEMORY_TYPE: c_int = 2;
const CU_POINTER_ATTRIBUTE_IS_MANAGED: c_int = 8;
const CU_MEMORYTYPE_DEVICE: c_uint = 2;
/// How often to look again for a `libcuda` that was not loaded yet.
const PROBE_INTERVAL_MS: u64 = 200;

static FOUND: OnceLock<PointerGetAttribute> = OnceLock::new();
static LAST_PROBE_MS: AtomicU64 = AtomicU64::new(0);
static HOST_REGIONS: parking_lot::RwLock<Vec<(u64, u64)>> = parking_lot::RwLock::new(Vec::new());

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The driver entry point, if `libcuda` is loaded (re-probed at most every 200 ms).
fn driver(force_probe: bool) -> Option<PointerGetAttribute> {
    if let Some(f) = FOUND.get() {
        return Some(*f);
    }
    let now = now_ms();
    let last = LAST_PROBE_MS.load(Ordering::Relaxed);
    if !force_probe && last != 0 && now.saturating_sub(last) < PROBE_INTERVAL_MS {
        return None;
    }
    LAST_PROBE_MS.store(now, Ordering::Relaxed);
    // SAFETY: the name is a NUL-terminated literal; RTLD_NOLOAD never loads a library, it only
    // returns a handle when the process already has it loaded.
    let handle = unsafe {
        libc::dlopen(
            c"libcuda.so.1".as_ptr(),
            libc::RTLD_NOLOAD | libc::RTLD_LAZY,
        )
    };
    if handle.is_null() {
        return None;
    }
    // SAFETY: `handle` is a valid handle from dlopen; the symbol name is NUL-terminated. The
    // handle is kept open for the life of the process (the library was loaded anyway).
    let sym = unsafe { libc::dlsym(handle, c"cuPointerGetAttribute".as_ptr()) };
    if sym.is_null() {
        return None;
    }
    // SAFETY: `cuPointerGetAttribute` has had this C signature in every CUDA driver API version.
    let f: PointerGetAttribute =
        unsafe { std::mem::transmute::<*mut c_void, PointerGetAttribute>(sym) };
    Some(*FOUND.get_or_init(|| f))
}

fn query(f: PointerGetAttribute, ptr: u64) -> bool {
    let mut kind: c_uint = 0;
    // SAFETY: `kind` is a valid out-parameter of the attribute's type (CUmemorytype, 32-bit);
    // the driver only inspects `ptr` as a number and never dereferences it.
    let rc = unsafe {
        f(
            &mut kind as *mut c_uint as *mut c_void,
            CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            ptr,
        )
    };
    if rc != 0 || kind != CU_MEMORYTYPE_DEVICE {
        return false;
    }
    let mut managed: c_uint = 0;
    // SAFETY: as above; the attribute's type is a 32-bit boolean.
    let rc = unsafe {
        f(
            &mut managed as *mut c_uint as *mut c_void,
            CU_POINTER_ATTRIBUTE_IS_MANAGED,
            ptr,
        )
    };
    // Managed memory is reachable from the CPU.
    !(rc == 0 && managed != 0)
}

/// True when `ptr` is GPU device memory (never true while `libcuda` is not loaded).
pub(crate) fn is_device(ptr: u64) -> bool {
    if ptr == 0 {
        return false;
    }
    let Some(f) = driver(false) else {
        return false;
    };
    if HOST_REGIONS
        .read()
        .iter()
        .any(|&(b, l)| ptr >= b && ptr - b < l)
    {
        return false;
    }
    query(f, ptr)
}

/// Classifies a region being registered: true if it is device memory (always probes).
pub(crate) fn region_is_device(ptr: u64) -> bool {
    match driver(true) {
        Some(f) => query(f, ptr),
        None => false,
    }
}

/// Remembers a registered host region so calls inside it skip the driver query.
pub(crate) fn note_host_region(ptr: u64, len: u64) {
    HOST_REGIONS.write().push((ptr, len));
}

/// Forgets a region on unregistration.
pub(crate) fn forget_region(ptr: u64) {
    HOST_REGIONS.write().retain(|&(b, _)| b != ptr);
}
