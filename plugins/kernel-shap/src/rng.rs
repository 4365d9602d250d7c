//! The plugin's seeded random numbers (shared with the LIME plugin).

pub use explaind_plugin_math::Rng;
