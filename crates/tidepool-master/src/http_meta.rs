//! HTTP metadata service (being written).
