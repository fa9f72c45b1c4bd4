//! RPC server (being written).
