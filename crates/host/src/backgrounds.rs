//! Registered background sets, named by their digest, per model, within a memory budget.

use crate::Failure;
use explaind_attribution::Background;
use ndarray::ArrayD;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A background a client registered for a model.
#[derive(Debug)]
pub struct Registered {
    pub model: String,
    pub background: Background,
    pub bytes: u64,
}

/// Backgrounds by model and id (their rows' digest). Registering the same rows for the same
/// model again returns the same id and keeps one copy; the same rows may be registered for
/// several models (same id, one entry each). A registration that would exceed the budget is
/// refused, never silently dropped, so an id a client holds stays valid for the life of the
/// daemon.
pub struct BackgroundRegistry {
    budget_bytes: u64,
    /// By (model, digest).
    entries: Mutex<HashMap<(String, String), Arc<Registered>>>,
}

impl BackgroundRegistry {
    pub fn new(budget_bytes: u64) -> Self {
        BackgroundRegistry { budget_bytes, entries: Mutex::new(HashMap::new()) }
    }

    pub fn register(&self, model: &str, rows: Vec<ArrayD<f32>>) -> Result<Arc<Registered>, Failure> {
        let digest = explaind_runtime::digest_arrays(&rows);
        let bytes = rows.iter().map(|a| a.len() as u64 * 4).sum();
        let mut entries = self.entries.lock().unwrap();
        let key = (model.to_string(), digest.clone());
        if let Some(existing) = entries.get(&key) {
            return Ok(existing.clone());
        }
        let used: u64 = entries.values().map(|e| e.bytes).sum();
        if used + bytes > self.budget_bytes {
            return Err(Failure::new(
                explaind_abi::EXD_RESOURCE_EXHAUSTED,
                format!("rows: {bytes} bytes would exceed the background budget ({used} of {} bytes in use)", self.budget_bytes),
            ));
        }
        let entry = Arc::new(Registered {
            model: model.to_string(),
            background: Background { digest: digest.clone(), rows: Arc::new(rows) },
            bytes,
        });
        entries.insert(key, entry.clone());
        Ok(entry)
    }

    /// The background `id` registered for `model`.
    pub fn get(&self, model: &str, id: &str) -> Option<Arc<Registered>> {
        self.entries.lock().unwrap().get(&(model.to_string(), id.to_string())).cloned()
    }

    /// The models `id` is registered for (to say why a lookup for another model failed).
    pub fn models_with(&self, id: &str) -> Vec<String> {
        let mut models: Vec<String> =
            self.entries.lock().unwrap().keys().filter(|(_, d)| d == id).map(|(m, _)| m.clone()).collect();
        models.sort();
        models
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_rows_same_id_and_budget_refusals() {
        let registry = BackgroundRegistry::new(100);
        let rows = vec![ArrayD::from_elem(vec![2, 3], 1.5f32)];
        let a = registry.register("m", rows.clone()).unwrap();
        let b = registry.register("m", rows.clone()).unwrap();
        assert_eq!(a.background.digest, b.background.digest);
        assert_eq!(a.bytes, 24);
        // The same rows for another model: the same id, an entry of its own.
        let other = registry.register("other", rows).unwrap();
        assert_eq!(other.background.digest, a.background.digest);
        assert_eq!(registry.models_with(&a.background.digest), ["m", "other"]);
        let big = vec![ArrayD::from_elem(vec![10, 3], 0.5f32)];
        let err = registry.register("m", big).unwrap_err();
        assert_eq!(err.code, explaind_abi::EXD_RESOURCE_EXHAUSTED);
        assert!(registry.get("m", &a.background.digest).is_some());
        assert!(registry.get("third", &a.background.digest).is_none());
    }
}
