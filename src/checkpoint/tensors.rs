//! Reading and writing safetensors files, with errors that name the file and the tensor.

use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A safetensors file read into memory and checked to parse.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    /// Reads `path`; a truncated file or a bad header is an [`Error::Safetensors`].
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = crate::error::read_file(path)?;
        let f = TensorFile { path: path.to_path_buf(), bytes };
        f.parsed()?;
        Ok(f)
    }

    fn parsed(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::Safetensors { path: self.path.clone(), msg: format!("{e:?}") })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor name in the file.
    pub fn names(&self) -> Vec<String> {
        self.parsed().map(|s| s.names().into_iter().cloned().collect()).unwrap_or_default()
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.parsed().map(|s| s.tensor(name).is_ok()).unwrap_or(false)
    }

    /// The `__metadata__` map of the header, if any.
    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.bytes).ok().and_then(|(_, m)| m.metadata().clone()).unwrap_or_default()
    }

    /// The tensor `name` converted to f32 (from F32, F16 or BF16) with its shape. If
    /// `expect` is given, the shape must match it exactly.
    pub fn f32(&self, name: &str, expect: Option<&[usize]>) -> Result<(Vec<f32>, Vec<usize>)> {
        let st = self.parsed()?;
        let view = st.tensor(name).map_err(|_| Error::tensor(&self.path, name, "missing"))?;
        let shape = view.shape().to_vec();
        if let Some(want) = expect {
            if shape != want {
                return Err(Error::tensor(&self.path, name, format!("shape {shape:?}, expected {want:?}")));
            }
        }
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(Error::tensor(&self.path, name, format!("dtype {other:?}; expected F32, F16 or BF16")));
            }
        };
        Ok((values, shape))
    }

    /// The integer tensor `name` (I64 or I32) as i64, with its shape.
    pub fn i64(&self, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let st = self.parsed()?;
        let view = st.tensor(name).map_err(|_| Error::tensor(&self.path, name, "missing"))?;
        let data = view.data();
        let values = match view.dtype() {
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            Dtype::I32 => data.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64).collect(),
            other => return Err(Error::tensor(&self.path, name, format!("dtype {other:?}; expected I64 or I32"))),
        };
        Ok((values, view.shape().to_vec()))
    }
}

/// One f32 tensor to write: name, shape, values.
pub type NamedTensor<'a> = (String, Vec<usize>, &'a [f32]);

/// Writes f32 tensors (and string metadata) to `path` through a temporary file in the same
/// directory and a rename, so a crash never leaves a half-written file under `path`.
pub fn write_f32(path: &Path, tensors: &[NamedTensor<'_>], metadata: HashMap<String, String>) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, values) in tensors {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(Error::tensor(path, name.clone(), format!("{} values for shape {shape:?}", values.len())));
        }
        let view = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(values))
            .map_err(|e| Error::tensor(path, name.clone(), format!("{e:?}")))?;
        views.push((name.clone(), view));
    }
    let bytes = safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| Error::Safetensors { path: path.to_path_buf(), msg: format!("{e:?}") })?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a sibling temporary file, syncs it, and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
