//! The model repository: `<root>/<name>/<version>/model.onnx`, fixed when the server starts.

use crate::OrtRuntime;
use crate::model::{Model, ModelError};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("{field}: {name:?} is not a valid model name or version (letters, digits, '.', '_' and '-' only)")]
    InvalidName { field: &'static str, name: String },
    #[error("model {0:?} is not loaded")]
    ModelNotFound(String),
    #[error("model {name:?} has no loaded version {version:?}")]
    VersionNotFound { name: String, version: String },
    #[error("model {name:?}{} is not in the repository", version_suffix(.version))]
    NotInRepository { name: String, version: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot list {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn version_suffix(version: &str) -> String {
    if version.is_empty() { String::new() } else { format!(" version {version:?}") }
}

/// Versions compare as integers when both are integers, else as strings.
fn compare_versions(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// A path component a request may name: no separators, no `..`, nothing hidden.
fn check_component(field: &'static str, name: &str) -> Result<(), RepositoryError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok { Ok(()) } else { Err(RepositoryError::InvalidName { field, name: name.to_string() }) }
}

pub struct ModelRepository {
    root: PathBuf,
    runtime: &'static OrtRuntime,
    /// Overrides the runtime's `max_batch_rows` for the models loaded from here.
    max_batch_rows: Option<usize>,
    /// name -> version -> model
    models: RwLock<BTreeMap<String, BTreeMap<String, Arc<Model>>>>,
}

impl ModelRepository {
    pub fn new(root: PathBuf, runtime: &'static OrtRuntime) -> Self {
        ModelRepository { root, runtime, max_batch_rows: None, models: RwLock::new(BTreeMap::new()) }
    }

    /// Models loaded from here send at most `rows` rows per ONNX Runtime call.
    pub fn with_max_batch_rows(mut self, rows: usize) -> Self {
        self.max_batch_rows = Some(rows);
        self
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Loads every model version in the repository. Returns what loaded and, separately, what
    /// failed: one broken model does not stop the others.
    pub fn load_all(&self) -> Result<(Vec<Arc<Model>>, Vec<RepositoryError>), RepositoryError> {
        let mut loaded = Vec::new();
        let mut failed = Vec::new();
        for name in self.list_dirs(&self.root)? {
            match self.load(&name, "") {
                Ok(models) => loaded.extend(models),
                Err(e) => failed.push(e),
            }
        }
        Ok((loaded, failed))
    }

    /// Loads (or reloads) `name`, one version or, with an empty version, every version found.
    pub fn load(&self, name: &str, version: &str) -> Result<Vec<Arc<Model>>, RepositoryError> {
        check_component("name", name)?;
        let model_dir = self.root.join(name);
        let versions = if version.is_empty() {
            if !model_dir.is_dir() {
                return Err(RepositoryError::NotInRepository { name: name.into(), version: String::new() });
            }
            self.list_dirs(&model_dir)?.into_iter().filter(|v| model_dir.join(v).join("model.onnx").is_file()).collect()
        } else {
            check_component("version", version)?;
            vec![version.to_string()]
        };
        if versions.is_empty() || versions.iter().any(|v| !model_dir.join(v).join("model.onnx").is_file()) {
            return Err(RepositoryError::NotInRepository { name: name.into(), version: version.into() });
        }
        // Load everything before publishing anything, so a failed reload leaves the old model.
        let mut fresh = Vec::new();
        for v in &versions {
            let mut model = Model::load(self.runtime, name, v, &model_dir.join(v))?;
            if let Some(rows) = self.max_batch_rows {
                model = model.with_max_batch_rows(rows);
            }
            fresh.push(Arc::new(model));
        }
        let mut models = self.models.write().unwrap();
        let entry = models.entry(name.to_string()).or_default();
        for m in &fresh {
            entry.insert(m.version.clone(), m.clone());
        }
        Ok(fresh)
    }

    /// Unloads one version or every version; requests holding the model finish with it.
    pub fn unload(&self, name: &str, version: &str) -> Result<Vec<String>, RepositoryError> {
        let mut models = self.models.write().unwrap();
        let versions = models.get_mut(name).ok_or_else(|| RepositoryError::ModelNotFound(name.into()))?;
        let removed = if version.is_empty() {
            std::mem::take(versions).into_keys().collect()
        } else {
            versions
                .remove(version)
                .map(|_| vec![version.to_string()])
                .ok_or_else(|| RepositoryError::VersionNotFound { name: name.into(), version: version.into() })?
        };
        if versions.is_empty() {
            models.remove(name);
        }
        Ok(removed)
    }

    /// A loaded model; an empty version means the highest loaded one.
    pub fn get(&self, name: &str, version: &str) -> Result<Arc<Model>, RepositoryError> {
        let models = self.models.read().unwrap();
        let versions = models.get(name).ok_or_else(|| RepositoryError::ModelNotFound(name.into()))?;
        let found = if version.is_empty() {
            versions.iter().max_by(|a, b| compare_versions(a.0, b.0)).map(|(_, m)| m)
        } else {
            versions.get(version)
        };
        found.cloned().ok_or_else(|| RepositoryError::VersionNotFound { name: name.into(), version: version.into() })
    }

    /// Every model version in the repository's directory (loaded or not), by name then
    /// version: what the Open Inference Protocol's repository index lists.
    pub fn on_disk(&self) -> Result<Vec<(String, String)>, RepositoryError> {
        let mut out = Vec::new();
        for name in self.list_dirs(&self.root)? {
            let dir = self.root.join(&name);
            let mut versions: Vec<String> =
                self.list_dirs(&dir)?.into_iter().filter(|v| dir.join(v).join("model.onnx").is_file()).collect();
            versions.sort_by(|a, b| compare_versions(a, b));
            out.extend(versions.into_iter().map(|v| (name.clone(), v)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| compare_versions(&a.1, &b.1)));
        Ok(out)
    }

    /// Every loaded model version, by name then version.
    pub fn list(&self) -> Vec<Arc<Model>> {
        let models = self.models.read().unwrap();
        let mut out = Vec::new();
        for versions in models.values() {
            let mut vs: Vec<_> = versions.values().cloned().collect();
            vs.sort_by(|a, b| compare_versions(&a.version, &b.version));
            out.extend(vs);
        }
        out
    }

    fn list_dirs(&self, dir: &std::path::Path) -> Result<Vec<String>, RepositoryError> {
        let io = |source| RepositoryError::Io { path: dir.to_path_buf(), source };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_type().map_err(io)?.is_dir()
                && let Some(name) = entry.file_name().to_str().filter(|n| check_component("name", n).is_ok())
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_repository() {
        for bad in ["", "..", ".hidden", "a/b", "../etc", "a\\b", "x y"] {
            assert!(check_component("name", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["digits-cnn", "wine_mlp", "v1.2"] {
            assert!(check_component("name", good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn versions_order_numerically_when_numeric() {
        assert_eq!(compare_versions("10", "9"), Ordering::Greater);
        assert_eq!(compare_versions("b", "a"), Ordering::Greater);
    }
}
