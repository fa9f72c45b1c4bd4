//! Master state (being written).
