//! Tidepool master (placeholder root; modules are being filled in).
pub mod settings;
