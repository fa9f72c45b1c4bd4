//! Conversions of Python arguments: non-negative integers (sizes, pointers) with the contract's
//! `TypeError` for negative or non-int values, and borrowed views of buffer-protocol objects.

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyInt};

/// A size or address: a Python `int` in `[0, 2**64)`; anything else is a `TypeError` (§1.2).
pub(crate) fn u64_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    if !obj.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int, got {}",
            obj.get_type().name()?
        )));
    }
    obj.extract::<u64>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a non-negative int below 2**64")))
}

/// A list of sizes or addresses.
pub(crate) fn u64_list(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u64>> {
    if obj.is_instance_of::<pyo3::types::PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of ints"
        )));
    }
    obj.try_iter()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a list of ints")))?
        .map(|item| u64_arg(&item?, what))
        .collect()
}

/// A list of lists of sizes or addresses (the multi-buffer calls).
pub(crate) fn u64_lists(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Vec<u64>>> {
    obj.try_iter()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a list of lists of ints")))?
        .map(|item| u64_list(&item?, what))
        .collect()
}

/// A list of keys; a bare `str` is refused (it would iterate by character).
///
/// The keys stay Python's (`PyBackedStr` borrows each `str`'s UTF-8 buffer and holds a
/// reference to it), so a batch call copies no key before encoding its request: with 64 keys,
/// one allocation and free per key showed up in a `batch_is_exist` profile.
pub(crate) fn key_list(obj: &Bound<'_, PyAny>) -> PyResult<Vec<PyBackedStr>> {
    obj.extract::<Vec<PyBackedStr>>()
        .map_err(|_| PyTypeError::new_err("keys must be a list of str"))
}

/// A contiguous byte view of a Python object, held for as long as this value lives. Must be
/// dropped with the GIL held (every owner of one does so: they live in GIL-holding frames).
pub(crate) enum ByteView<'py> {
    /// `bytes`: immutable, borrowed directly.
    Bytes(Bound<'py, PyBytes>),
    /// Anything else with the buffer protocol.
    Buffer(Box<ffi::Py_buffer>),
}

impl<'py> ByteView<'py> {
    /// Borrows `obj`'s bytes. With `strict`, the buffer must be 1-D with item size 1 (the rule
    /// for `put_parts`), else `RuntimeError`.
    pub(crate) fn new(obj: &Bound<'py, PyAny>, strict: bool) -> PyResult<Self> {
        if let Ok(b) = obj.downcast::<PyBytes>() {
            return Ok(ByteView::Bytes(b.clone()));
        }
        let mut view: Box<ffi::Py_buffer> = Box::new(ffi::Py_buffer::new());
        let flags = if strict {
            ffi::PyBUF_ND | ffi::PyBUF_FORMAT
        } else {
            ffi::PyBUF_SIMPLE
        };
        // SAFETY: `obj` is a live object (we hold the GIL through `Bound`), and `view` points to
        // writable, properly aligned storage for a `Py_buffer`.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
        if rc != 0 {
            let err = PyErr::take(obj.py()).unwrap_or_else(|| {
                PyTypeError::new_err("object does not support the buffer protocol")
            });
            return Err(if strict {
                PyRuntimeError::new_err(format!("parts must be contiguous 1-D byte buffers: {err}"))
            } else {
                PyTypeError::new_err(format!("value must support the buffer protocol: {err}"))
            });
        }
        let this = ByteView::Buffer(view);
        if strict
            && let ByteView::Buffer(v) = &this
            && (v.ndim > 1 || v.itemsize != 1)
        {
            return Err(PyRuntimeError::new_err(
                "parts must be 1-D buffers with item size 1",
            ));
        }
        Ok(this)
    }

    /// The viewed bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            ByteView::Bytes(b) => b.as_bytes(),
            ByteView::Buffer(v) => {
                if v.buf.is_null() || v.len <= 0 {
                    return &[];
                }
                // SAFETY: the exporter keeps `buf[..len]` valid and unmoved until
                // `PyBuffer_Release`, which runs only when `self` drops; contiguity was
                // requested in the flags.
                unsafe { std::slice::from_raw_parts(v.buf as *const u8, v.len as usize) }
            }
        }
    }
}

impl Drop for ByteView<'_> {
    fn drop(&mut self) {
        if let ByteView::Buffer(v) = self {
            // SAFETY: the view was filled by a successful `PyObject_GetBuffer` and is released
            // once; owners drop views only while holding the GIL.
            unsafe { ffi::PyBuffer_Release(&mut **v) };
        }
    }
}

/// The bytes of a caller's memory at `(addr, len)`.
///
/// # Safety
/// The caller (per the Mooncake contract) owns `[addr, addr+len)` as readable host memory that
/// stays valid and is not written during the call. `addr` must be non-null.
pub(crate) unsafe fn raw_slice<'a>(addr: u64, len: u64) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller, see above.
    unsafe { std::slice::from_raw_parts(addr as usize as *const u8, len as usize) }
}

/// Writable caller memory at `(addr, len)`.
///
/// # Safety
/// The caller owns `[addr, addr+len)` as writable host memory, valid and not otherwise accessed
/// during the call; `addr` must be non-null. Distinct arguments of one call must not overlap.
pub(crate) unsafe fn raw_slice_mut<'a>(addr: u64, len: u64) -> &'a mut [u8] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: guaranteed by the caller, see above.
    unsafe { std::slice::from_raw_parts_mut(addr as usize as *mut u8, len as usize) }
}
