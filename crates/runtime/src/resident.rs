//! Tensors kept where a model's session reads them, for inputs that many runs share.
//!
//! Deep SHAP feeds the same cached background activations to every backward run. On the CPU
//! ONNX Runtime reads host arrays in place, so keeping them as arrays costs nothing per run. Under
//! the CUDA execution provider every host input is copied to the GPU on every run; a
//! [`Resident`] set is copied there once, when it is made, and runs then read rows of it in place
//! through tensors that point into the device buffer ([`Input::Resident`]).

use crate::ExecutionProvider;
use ndarray::{ArrayD, ArrayViewD, Axis};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::SessionInputValue;
use ort::value::{Tensor, TensorRef, TensorRefMut};
use std::ops::Range;

/// Arrays with rows on their first axis, kept in the memory of the execution provider that
/// made them (see [`crate::Model::keep_resident`]).
pub struct Resident {
    storage: Storage,
    shapes: Vec<Vec<usize>>,
}

enum Storage {
    Host(Vec<ArrayD<f32>>),
    /// Device buffers owned by ONNX Runtime's CUDA allocator; each tensor frees its buffer when
    /// dropped, so the set lives exactly as long as the [`Resident`] (the cache entry) does.
    Cuda(Vec<Tensor<f32>>),
}

// SAFETY: the device tensors are only read after construction (runs borrow them through
// `&Resident` and ONNX Runtime never writes its inputs), and an OrtValue may be used from any
// thread; host arrays are Send + Sync already.
unsafe impl Send for Storage {}
unsafe impl Sync for Storage {}

impl Drop for Resident {
    fn drop(&mut self) {
        if let Storage::Cuda(tensors) = &mut self.storage {
            let _gpu = crate::lock_gpu();
            tensors.clear();
        }
    }
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resident").field("location", &self.location()).field("shapes", &self.shapes).finish()
    }
}

impl Resident {
    /// Keeps `arrays` in host memory.
    pub fn host(arrays: Vec<ArrayD<f32>>) -> Resident {
        let arrays: Vec<ArrayD<f32>> =
            arrays.into_iter().map(|a| if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() }).collect();
        let shapes = arrays.iter().map(|a| a.shape().to_vec()).collect();
        Resident { storage: Storage::Host(arrays), shapes }
    }

    /// Copies `arrays` into the memory of CUDA device `device_id`.
    pub(crate) fn cuda(arrays: Vec<ArrayD<f32>>, device_id: i32) -> Result<Resident, ort::Error> {
        let shapes: Vec<Vec<usize>> = arrays.iter().map(|a| a.shape().to_vec()).collect();
        let mut tensors = Vec::with_capacity(arrays.len());
        let _gpu = crate::lock_gpu();
        for array in arrays {
            let host = Tensor::from_array(array.as_standard_layout().into_owned())?;
            tensors.push(host.to(AllocationDevice::CUDA, device_id)?);
        }
        Ok(Resident { storage: Storage::Cuda(tensors), shapes })
    }

    /// Where the arrays live: the CPU for host memory, CUDA for device memory.
    pub fn location(&self) -> ExecutionProvider {
        match self.storage {
            Storage::Host(_) => ExecutionProvider::Cpu,
            Storage::Cuda(_) => ExecutionProvider::Cuda,
        }
    }

    /// How many arrays the set holds.
    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    /// Bytes held (host or device memory, per [`Resident::location`]).
    pub fn bytes(&self) -> u64 {
        self.shapes.iter().map(|s| s.iter().product::<usize>() as u64 * 4).sum()
    }

    /// A session input reading `rows` of array `index` in place.
    pub(crate) fn input(&self, index: usize, rows: Range<usize>) -> Result<SessionInputValue<'_>, ort::Error> {
        let shape = &self.shapes[index];
        let first = shape.first().copied().unwrap_or(1);
        if rows.start > rows.end || rows.end > first {
            return Err(ort::Error::new(format!("rows {rows:?} of a resident array with {first} rows")));
        }
        let mut view_shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        if let Some(d) = view_shape.first_mut() {
            *d = rows.len() as i64;
        }
        match &self.storage {
            Storage::Host(arrays) => {
                let view: ArrayViewD<f32> = arrays[index].slice_axis(Axis(0), rows.into());
                let data = view.to_slice().ok_or_else(|| ort::Error::new("resident host arrays are contiguous"))?;
                Ok(TensorRef::from_array_view((view_shape, data))?.into())
            }
            Storage::Cuda(tensors) => {
                let tensor = &tensors[index];
                let row_elements: usize = shape.iter().skip(1).product();
                let offset = rows.start * row_elements * std::mem::size_of::<f32>();
                let memory = MemoryInfo::new(
                    AllocationDevice::CUDA,
                    tensor.memory_info().device_id(),
                    AllocatorType::Device,
                    MemoryType::Default,
                )?;
                // SAFETY: `offset` plus the view's bytes stays inside the tensor's buffer (rows
                // checked above, standard layout), the buffer lives as long as `self`, which the
                // returned value borrows, and ONNX Runtime does not write to inputs.
                let view = unsafe {
                    let data = (tensor.data_ptr() as *mut u8).add(offset).cast();
                    TensorRefMut::<f32>::from_raw(memory, data, view_shape.into())?
                };
                Ok(view.into())
            }
        }
    }
}

/// One input of [`crate::Model::run_inputs`].
pub enum Input<'a> {
    /// Host memory, read in place on the CPU and copied to the device under CUDA.
    Host(ArrayViewD<'a, f32>),
    /// Host memory in the input's declared element type (token ids, masks), as `Host`.
    Typed(crate::TensorView<'a>),
    /// Rows of one array of a [`Resident`] set, read where they are kept.
    Resident { set: &'a Resident, index: usize, rows: Range<usize> },
}

impl Input<'_> {
    /// The same input, borrowed again (to feed it to several runs).
    pub fn reborrow(&self) -> Input<'_> {
        match self {
            Input::Host(a) => Input::Host(a.view()),
            Input::Typed(view) => Input::Typed(view.reborrow()),
            Input::Resident { set, index, rows } => Input::Resident { set, index: *index, rows: rows.clone() },
        }
    }

    /// The rows this input holds (its first axis).
    pub fn rows(&self) -> usize {
        match self {
            Input::Host(a) => a.shape().first().copied().unwrap_or(1),
            Input::Typed(view) => view.rows(),
            Input::Resident { rows, .. } => rows.len(),
        }
    }
}
