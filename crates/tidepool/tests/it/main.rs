//! Multi-process tests: the real `tidepool` binary runs the master and storage nodes on
//! 127.0.0.1 with OS-assigned ports (reported on a READY line), and the test process joins as
//! a client. Every child is killed when its handle drops.

mod admin;
mod cluster;
mod etcd;
mod faults;
mod store;
mod thin;
