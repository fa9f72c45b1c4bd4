//! Values handed back to Python: replica descriptors (§1.7), `BufferHandle` (§1.5) and the
//! host memory allocator of standalone mode.

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use std::collections::HashSet;
use std::os::raw::c_int;

/// Replica state, numbered as Mooncake's.
#[pyclass(eq, eq_int, module = "tidepool._native")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ReplicaStatus {
    #[pyo3(name = "UNDEFINED")]
    Undefined = 0,
    #[pyo3(name = "INITIALIZED")]
    Initialized = 1,
    #[pyo3(name = "PROCESSING")]
    Processing = 2,
    #[pyo3(name = "COMPLETE")]
    Complete = 3,
    #[pyo3(name = "REMOVED")]
    Removed = 4,
    #[pyo3(name = "FAILED")]
    Failed = 5,
}

impl From<tidepool_proto::ReplicaStatus> for ReplicaStatus {
    fn from(s: tidepool_proto::ReplicaStatus) -> Self {
        use tidepool_proto::ReplicaStatus as S;
        match s {
            S::Undefined => Self::Undefined,
            S::Initialized => Self::Initialized,
            S::Processing => Self::Processing,
            S::Complete => Self::Complete,
            S::Removed => Self::Removed,
            S::Failed => Self::Failed,
        }
    }
}

/// Where a memory replica's bytes are: address inside the owner's segment and the owner's
/// data endpoint.
#[pyclass(frozen, get_all, module = "tidepool._native")]
#[derive(Clone, Debug)]
pub(crate) struct Descriptor {
    pub(crate) size: u64,
    pub(crate) buffer_address: u64,
    pub(crate) transport_endpoint: String,
}

#[pymethods]
impl Descriptor {
    fn __repr__(&self) -> String {
        format!(
            "Descriptor(size={}, buffer_address={:#x}, transport_endpoint={:?})",
            self.size, self.buffer_address, self.transport_endpoint
        )
    }
}

/// A memory replica.
#[pyclass(frozen, get_all, module = "tidepool._native")]
#[derive(Clone, Debug)]
pub(crate) struct MemoryDescriptor {
    pub(crate) buffer_descriptor: Descriptor,
}

/// A disk replica (no disk tier yet; present for the API's shape).
#[pyclass(frozen, get_all, module = "tidepool._native")]
#[derive(Clone, Debug)]
pub(crate) struct DiskDescriptor {
    file_path: String,
    object_size: u64,
}

/// One replica of an object.
#[pyclass(frozen, module = "tidepool._native")]
#[derive(Clone, Debug)]
pub(crate) struct ReplicaDescriptor {
    #[pyo3(get)]
    pub(crate) status: ReplicaStatus,
    pub(crate) memory: Option<MemoryDescriptor>,
}

#[pymethods]
impl ReplicaDescriptor {
    fn is_memory_replica(&self) -> bool {
        self.memory.is_some()
    }

    fn is_disk_replica(&self) -> bool {
        false
    }

    fn is_local_disk_replica(&self) -> bool {
        false
    }

    fn get_memory_descriptor(&self) -> PyResult<MemoryDescriptor> {
        self.memory
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("not a memory replica"))
    }

    fn get_disk_descriptor(&self) -> PyResult<DiskDescriptor> {
        Err(PyRuntimeError::new_err("not a disk replica"))
    }

    fn __repr__(&self) -> String {
        format!(
            "ReplicaDescriptor(status={:?}, memory={:?})",
            self.status,
            self.memory.as_ref().map(|m| &m.buffer_descriptor)
        )
    }
}

/// An object copied into local memory. Exposes the bytes through the buffer protocol (1-D,
/// bytes) and `ptr()` / `size()` / `len()`; the space returns to the local buffer when the
/// handle is dropped.
#[pyclass(frozen, module = "tidepool._native")]
pub(crate) struct BufferHandle {
    data: Box<[u8]>,
    _reservation: crate::store::Reservation,
}

impl BufferHandle {
    pub(crate) fn new(data: Vec<u8>, reservation: crate::store::Reservation) -> Self {
        Self {
            data: data.into_boxed_slice(),
            _reservation: reservation,
        }
    }
}

#[pymethods]
impl BufferHandle {
    fn ptr(&self) -> u64 {
        self.data.as_ptr() as u64
    }

    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn __len__(&self) -> usize {
        self.data.len()
    }

    /// # Safety
    /// Called by the interpreter with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let (ptr, len) = {
            let me = slf.get();
            (me.data.as_ptr(), me.data.len())
        };
        // SAFETY: `view` comes from the interpreter; `PyBuffer_FillInfo` takes a reference to
        // `slf`, so the boxed bytes (which never move or shrink) outlive the view. The view is
        // read-only: Rust never mutates `data` after construction.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr as *mut std::ffi::c_void,
                len as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::take(slf.py())
                .unwrap_or_else(|| PyRuntimeError::new_err("cannot export the buffer")));
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "BufferHandle(ptr={:#x}, size={})",
            self.data.as_ptr() as u64,
            self.data.len()
        )
    }
}

/// Shareable, page-aligned host memory (SGLang's standalone mode allocates its host KV pool
/// with it). Each block is a sealed memfd mapped `MAP_SHARED`: a store set up with
/// `setup_dummy` hands the block to its `tidepool node`, which then reads and writes it in
/// place, so zero-copy calls on it move no bytes through the thin client.
#[pyclass(frozen, module = "tidepool._native")]
pub(crate) struct HostMemAllocator {
    /// Blocks this allocator returned, so `free` refuses foreign addresses.
    blocks: parking_lot::Mutex<HashSet<u64>>,
}

#[pymethods]
impl HostMemAllocator {
    #[new]
    fn new() -> Self {
        Self {
            blocks: parking_lot::Mutex::new(HashSet::new()),
        }
    }

    /// Address of `size` zeroed bytes, 0 on failure.
    fn alloc(&self, py: Python<'_>, size: &Bound<'_, PyAny>) -> PyResult<u64> {
        let size = crate::args::u64_arg(size, "size")?;
        if size == 0 {
            return Ok(0);
        }
        // Creating and mapping the memfd is a syscall or three: do it without the GIL.
        let addr = py.allow_threads(|| match tidepool_client::thin::alloc_shared(size) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(size, error = %e, "MooncakeHostMemAllocator.alloc failed");
                0
            }
        });
        if addr != 0 {
            self.blocks.lock().insert(addr);
        }
        Ok(addr)
    }

    /// Frees a block from `alloc`: 0, or -600 for an address it did not return.
    fn free(&self, py: Python<'_>, ptr: &Bound<'_, PyAny>) -> PyResult<i32> {
        let ptr = crate::args::u64_arg(ptr, "ptr")?;
        if !self.blocks.lock().remove(&ptr) {
            return Ok(tidepool_common::ErrorCode::InvalidParams.as_i32());
        }
        Ok(py.allow_threads(|| {
            if tidepool_client::thin::free_shared(ptr) {
                0
            } else {
                tidepool_common::ErrorCode::InvalidParams.as_i32()
            }
        }))
    }
}
