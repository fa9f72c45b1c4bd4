//! gflags-style command lines of `tidepool master` (Mooncake's `mooncake_master`, contract §4.1)
//! and `tidepool node` (Mooncake's standalone `mooncake_client`, §4.2).
//!
//! Mooncake users launch processes with scripts such as
//! `mooncake_master --rpc_port=50051 --default_kv_lease_ttl=500 -v=1`, so this module accepts
//! gflags syntax rather than clap's: `--name=value`, `--name value`, a single dash (`-name=value`),
//! booleans as `--name`, `--noname` or `--name=true|false` (bool grammar of §5.2, plus gflags'
//! `t`/`f`), `--flagfile=FILE` (one flag per line) and `--` to end the flags.
//!
//! # Layout
//! - Flag tables: [`MASTER_FLAGS`] (implemented), [`MOONCAKE_MASTER_IGNORED_FLAGS`] (Mooncake
//!   features tidepool lacks: accepted with a warning so launch scripts keep working),
//!   [`GLOG_FLAGS`] (logging flags; tidepool logs through `RUST_LOG`), [`NODE_FLAGS`].
//! - A tokenizer turns the arguments into `(name, value)` assignments using the tables, so
//!   `--name value` knows whether `value` belongs to the flag.
//! - [`parse_master_flags`] applies defaults < `--config_path` file < explicit flags, then
//!   validates through [`MasterSettings::validate`]; [`parse_node_flags`] does the same for
//!   the node (no config file).
//!
//! Errors are plain strings for the binary to print before exiting 1. `--help` is reported as
//! an `Err` too, whose text starts with [`USAGE_PREFIX`]; test it with [`is_help`] and exit 0.

// The binary adopts this surface in stages (the node subcommand may land after the master
// one); dead-code analysis of a binary crate would otherwise fail `-D warnings` on every public
// item not yet read. Remove once `main.rs` uses all of it.

use tidepool_common::parse::{parse_bool, parse_duration_ms, parse_size};
use tidepool_master::settings::{AllocationStrategy, MasterSettings};

/// Every help text returned as `Err` by the parsers starts with this; no error message does.
pub const USAGE_PREFIX: &str = "usage: ";

/// Whether an `Err` from [`parse_master_flags`] / [`parse_node_flags`] is the answer to
/// `--help` (print it to stdout, exit 0) rather than an error (print to stderr, exit 1).
pub fn is_help(message: &str) -> bool {
    message.starts_with(USAGE_PREFIX)
}

/// Whether a flag takes a value. It decides how `--name value` is read: a boolean flag never
/// consumes the next argument (gflags' rule), so `--enable_ha next` leaves `next` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--name`, `--noname`, `--name=BOOL`.
    Bool,
    /// `--name=VALUE` or `--name VALUE`.
    Value,
}

/// The master flags tidepool implements: (name, kind, default, meaning). Order is the order
/// of `--help`.
pub const MASTER_FLAGS: &[(&str, FlagKind, &str, &str)] = &[
    (
        "rpc_port",
        FlagKind::Value,
        "50051",
        "client RPC port (0 with no --port: any free port)",
    ),
    (
        "port",
        FlagKind::Value,
        "50051",
        "deprecated alias of --rpc_port, used when it is 0/unset",
    ),
    (
        "rpc_address",
        FlagKind::Value,
        "0.0.0.0",
        "bind/advertised address",
    ),
    (
        "rpc_interface",
        FlagKind::Value,
        "",
        "NIC whose IPv4 overrides --rpc_address",
    ),
    (
        "rpc_thread_num",
        FlagKind::Value,
        "0",
        "worker threads; 0 = min(16, cores)",
    ),
    (
        "max_threads",
        FlagKind::Value,
        "0",
        "deprecated alias of --rpc_thread_num",
    ),
    (
        "metrics_port",
        FlagKind::Value,
        "9003",
        "admin/metrics HTTP port",
    ),
    (
        "metrics_host",
        FlagKind::Value,
        "0.0.0.0",
        "admin HTTP bind address",
    ),
    (
        "enable_metric_reporting",
        FlagKind::Bool,
        "true",
        "log a summary line every 10 s",
    ),
    (
        "default_kv_lease_ttl",
        FlagKind::Value,
        "10000",
        "read-lease TTL (ms, or ms/s/m/h suffix)",
    ),
    (
        "default_kv_soft_pin_ttl",
        FlagKind::Value,
        "1800000",
        "soft-pin TTL when none is given",
    ),
    (
        "max_kv_soft_pin_ttl",
        FlagKind::Value,
        "86400000",
        "largest soft-pin TTL a put may ask for",
    ),
    (
        "allow_evict_soft_pinned_objects",
        FlagKind::Bool,
        "true",
        "soft-pinned objects are last-resort eviction candidates",
    ),
    (
        "eviction_high_watermark_ratio",
        FlagKind::Value,
        "0.9",
        "proactive eviction threshold, [0, 1]",
    ),
    (
        "eviction_ratio",
        FlagKind::Value,
        "0.05",
        "fraction of capacity freed per eviction, [0, 1]",
    ),
    (
        "client_ttl",
        FlagKind::Value,
        "10",
        "seconds without heartbeat before a client is dead",
    ),
    (
        "put_start_discard_timeout_sec",
        FlagKind::Value,
        "30",
        "age (s) after which an unfinished put may be taken over",
    ),
    (
        "put_start_release_timeout_sec",
        FlagKind::Value,
        "600",
        "age (s) after which an unfinished put's space is reclaimed",
    ),
    (
        "allocation_strategy",
        FlagKind::Value,
        "random",
        "random | free_ratio_first | local_first",
    ),
    (
        "memory_allocator",
        FlagKind::Value,
        "offset",
        "offset | cachelib (accepted; tidepool has its own allocator)",
    ),
    (
        "cluster_id",
        FlagKind::Value,
        "mooncake_cluster",
        "namespace for HA keys and metadata prefixes",
    ),
    (
        "enable_http_metadata_server",
        FlagKind::Bool,
        "false",
        "run the HTTP metadata server inside the master",
    ),
    (
        "http_metadata_server_host",
        FlagKind::Value,
        "0.0.0.0",
        "its bind address",
    ),
    (
        "http_metadata_server_port",
        FlagKind::Value,
        "8080",
        "its port",
    ),
    (
        "enable_metadata_cleanup_on_timeout",
        FlagKind::Bool,
        "false",
        "delete a dead client's metadata entries",
    ),
    (
        "config_path",
        FlagKind::Value,
        "",
        "JSON or flat YAML file whose keys are flag names",
    ),
];

/// Flags Mooncake's master defines for features tidepool does not have (yet): HA, SSD offload,
/// snapshots, DFS/3FS, CXL, NVMe-oF, tenants, KV events, dynamic replication, task manager and
/// RPC tuning. They are accepted and ignored with one warning each, so existing launch scripts
/// run unchanged (contract §4.1).
pub const MOONCAKE_MASTER_IGNORED_FLAGS: &[(&str, FlagKind)] = &[
    // RPC tuning of Mooncake's coro_rpc server.
    ("rpc_conn_timeout_seconds", FlagKind::Value),
    ("rpc_enable_tcp_no_delay", FlagKind::Bool),
    ("enable_gc", FlagKind::Bool),
    // High availability (phase P5).
    ("enable_ha", FlagKind::Bool),
    ("ha_backend_type", FlagKind::Value),
    ("ha_backend_connstring", FlagKind::Value),
    ("etcd_endpoints", FlagKind::Value),
    // SSD offload and DFS/3FS storage backend.
    ("enable_offload", FlagKind::Bool),
    ("root_fs_dir", FlagKind::Value),
    ("global_file_segment_size", FlagKind::Value),
    ("enable_disk_eviction", FlagKind::Bool),
    ("quota_bytes", FlagKind::Value),
    ("storage_backend_type", FlagKind::Value),
    ("enable_dfs", FlagKind::Bool),
    // Snapshots of master state.
    ("enable_snapshot", FlagKind::Bool),
    ("enable_snapshot_restore", FlagKind::Bool),
    ("snapshot_interval_seconds", FlagKind::Value),
    ("snapshot_interval_sec", FlagKind::Value),
    ("snapshot_child_timeout_seconds", FlagKind::Value),
    ("snapshot_retention_count", FlagKind::Value),
    ("snapshot_backup_dir", FlagKind::Value),
    ("use_snapshot_backup_dir", FlagKind::Bool),
    ("snapshot_object_store_type", FlagKind::Value),
    ("snapshot_payload_store_type", FlagKind::Value),
    ("snapshot_payload_backend_type", FlagKind::Value),
    ("snapshot_catalog_store_type", FlagKind::Value),
    ("snapshot_catalog_backend_type", FlagKind::Value),
    ("snapshot_catalog_store_connstring", FlagKind::Value),
    ("snapshot_catalog_backend_connstring", FlagKind::Value),
    // CXL memory.
    ("enable_cxl", FlagKind::Bool),
    ("cxl_path", FlagKind::Value),
    ("cxl_size", FlagKind::Value),
    // NVMe over Fabrics.
    ("enable_nof", FlagKind::Bool),
    ("enable_nvmeof", FlagKind::Bool),
    ("nof_segment_size", FlagKind::Value),
    // Tenants.
    ("enable_tenant", FlagKind::Bool),
    ("enable_multi_tenant", FlagKind::Bool),
    ("default_tenant_quota", FlagKind::Value),
    ("tenant_quota_bytes", FlagKind::Value),
    // KV cache events.
    ("enable_kv_event", FlagKind::Bool),
    ("enable_kv_events", FlagKind::Bool),
    ("enable_kv_event_publisher", FlagKind::Bool),
    ("kv_event_endpoint", FlagKind::Value),
    ("kv_events_endpoint", FlagKind::Value),
    ("kv_event_publisher_endpoint", FlagKind::Value),
    ("kv_event_topic", FlagKind::Value),
    ("kv_event_buffer_size", FlagKind::Value),
    // Dynamic replication.
    ("enable_dynamic_replication", FlagKind::Bool),
    ("dynamic_replication_interval_sec", FlagKind::Value),
    ("hot_key_threshold", FlagKind::Value),
    ("max_replica_num", FlagKind::Value),
    // Task manager.
    ("max_total_finished_tasks", FlagKind::Value),
    ("max_total_pending_tasks", FlagKind::Value),
    ("max_total_processing_tasks", FlagKind::Value),
    ("pending_task_timeout_sec", FlagKind::Value),
    ("processing_task_timeout_sec", FlagKind::Value),
    ("max_retry_attempts", FlagKind::Value),
];

/// glog's flags, accepted by every process and ignored with a warning: tidepool logs through
/// `tracing`, configured with `RUST_LOG`.
pub const GLOG_FLAGS: &[(&str, FlagKind)] = &[
    ("v", FlagKind::Value),
    ("vmodule", FlagKind::Value),
    ("log_dir", FlagKind::Value),
    ("logtostderr", FlagKind::Bool),
    ("alsologtostderr", FlagKind::Bool),
    ("colorlogtostderr", FlagKind::Bool),
    ("minloglevel", FlagKind::Value),
    ("stderrthreshold", FlagKind::Value),
    ("log_prefix", FlagKind::Bool),
    ("logbuflevel", FlagKind::Value),
    ("logbufsecs", FlagKind::Value),
    ("max_log_size", FlagKind::Value),
    ("stop_logging_if_full_disk", FlagKind::Bool),
    ("log_link", FlagKind::Value),
    ("logfile_mode", FlagKind::Value),
    ("timestamp_in_logfile_name", FlagKind::Bool),
];

/// The node flags (Mooncake's `mooncake_client`, contract §4.2): (name, kind, default,
/// meaning). Dashes and underscores in node flag names are equivalent.
pub const NODE_FLAGS: &[(&str, FlagKind, &str, &str)] = &[
    (
        "host",
        FlagKind::Value,
        "0.0.0.0",
        "bind host; `ip:port` also fixes the data-plane port",
    ),
    ("port", FlagKind::Value, "50052", "thin-client RPC port"),
    (
        "global_segment_size",
        FlagKind::Value,
        "4 GB",
        "contributed memory (size string)",
    ),
    (
        "segment_size",
        FlagKind::Value,
        "4 GB",
        "alias of --global_segment_size",
    ),
    (
        "local_buffer_size",
        FlagKind::Value,
        "0",
        "staging buffer (size string)",
    ),
    (
        "master_server_address",
        FlagKind::Value,
        "127.0.0.1:50051",
        "master address",
    ),
    (
        "metadata_server",
        FlagKind::Value,
        "http://127.0.0.1:8080/metadata",
        "metadata service or P2PHANDSHAKE",
    ),
    (
        "protocol",
        FlagKind::Value,
        "tcp",
        "transport (tcp; rdma only with MC_FORCE_TCP=1)",
    ),
    ("device_names", FlagKind::Value, "", "RDMA devices"),
    (
        "device_name",
        FlagKind::Value,
        "",
        "alias of --device_names",
    ),
    ("threads", FlagKind::Value, "1", "worker threads"),
    ("tenant_id", FlagKind::Value, "default", "tenant"),
    (
        "enable_offload",
        FlagKind::Bool,
        "false",
        "SSD tier (not supported yet: true is an error)",
    ),
    (
        "start_offload_rpc_server",
        FlagKind::Bool,
        "true",
        "accepted; no effect without offload",
    ),
    (
        "enable_http_server",
        FlagKind::Bool,
        "false",
        "client HTTP endpoint",
    ),
    ("http_port", FlagKind::Value, "9300", "client HTTP port"),
];

/// Flag names that ask for help instead of naming a flag.
const HELP_FLAGS: &[&str] = &["help", "helpfull", "helpshort", "h", "?"];

/// Upper bound of `--rpc_thread_num=0` (contract §4.1: `min(16, cores)`).
const MAX_DEFAULT_RPC_THREADS: usize = 16;

/// Parsed `tidepool master` command line.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterFlags {
    /// Settings handed to the master library (TTLs, eviction, strategy, cluster id).
    pub settings: MasterSettings,
    /// Address the RPC server binds and advertises. Default: `0.0.0.0`.
    pub rpc_address: String,
    /// RPC port, after the `--port` alias is resolved; 0 means any free port. Default: 50051.
    pub rpc_port: u16,
    /// NIC whose IPv4 address overrides `rpc_address` (the caller resolves it). Default: `""`.
    pub rpc_interface: String,
    /// RPC worker threads, already resolved (never 0). Default: min(16, cores).
    pub rpc_thread_num: usize,
    /// Admin/metrics HTTP bind address. Default: `0.0.0.0`.
    pub metrics_host: String,
    /// Admin/metrics HTTP port. Default: 9003.
    pub metrics_port: u16,
    /// Log a summary line every 10 s. Default: true.
    pub enable_metric_reporting: bool,
    /// Run the HTTP metadata server inside the master. Default: false.
    pub enable_http_metadata_server: bool,
    /// Bind address of the embedded metadata server. Default: `0.0.0.0`.
    pub http_metadata_server_host: String,
    /// Port of the embedded metadata server. Default: 8080.
    pub http_metadata_server_port: u16,
    /// Delete a dead client's `ram/` and `rpc_meta/` entries. Default: false.
    pub enable_metadata_cleanup_on_timeout: bool,
    /// `offset` or `cachelib`; recorded only, tidepool uses its own allocator. Default: `offset`.
    pub memory_allocator: String,
    /// The config file that was read, if any. Default: `""`.
    pub config_path: String,
    /// One line per accepted-but-ignored flag or config key, for the caller to log.
    pub warnings: Vec<String>,
}

impl Default for MasterFlags {
    fn default() -> Self {
        Self {
            settings: MasterSettings::default(),
            rpc_address: "0.0.0.0".into(),
            rpc_port: 50051,
            rpc_interface: String::new(),
            rpc_thread_num: default_rpc_threads(),
            metrics_host: "0.0.0.0".into(),
            metrics_port: 9003,
            enable_metric_reporting: true,
            enable_http_metadata_server: false,
            http_metadata_server_host: "0.0.0.0".into(),
            http_metadata_server_port: 8080,
            enable_metadata_cleanup_on_timeout: false,
            memory_allocator: "offset".into(),
            config_path: String::new(),
            warnings: Vec::new(),
        }
    }
}

/// `min(16, cores)`, the meaning of `--rpc_thread_num=0`.
fn default_rpc_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_DEFAULT_RPC_THREADS)
}

/// Parsed `tidepool node` command line (Mooncake's `mooncake_client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFlags {
    /// Bind host as given; `ip:port` also fixes the data-plane port (the caller splits it).
    /// Default: `0.0.0.0`.
    pub host: String,
    /// Thin-client RPC port. Default: 50052.
    pub port: u16,
    /// Contributed memory in bytes. Default: 4 GiB.
    pub global_segment_size: u64,
    /// Staging buffer in bytes. Default: 0.
    pub local_buffer_size: u64,
    /// Master address. Default: `127.0.0.1:50051`.
    pub master_server_address: String,
    /// Metadata service URL or `P2PHANDSHAKE`. Default: `http://127.0.0.1:8080/metadata`.
    pub metadata_server: String,
    /// Transport, lower-cased; always `tcp` today. Default: `tcp`.
    pub protocol: String,
    /// RDMA device list. Default: `""`.
    pub device_names: String,
    /// Worker threads (≥ 1). Default: 1.
    pub threads: usize,
    /// Tenant. Default: `default`.
    pub tenant_id: String,
    /// Serve the client HTTP endpoint (§4.5). Default: false.
    pub enable_http_server: bool,
    /// Its port. Default: 9300.
    pub http_port: u16,
    /// One line per accepted-but-ignored flag or forced setting, for the caller to log.
    pub warnings: Vec<String>,
}

impl Default for NodeFlags {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 50052,
            global_segment_size: 4 << 30,
            local_buffer_size: 0,
            master_server_address: "127.0.0.1:50051".into(),
            metadata_server: "http://127.0.0.1:8080/metadata".into(),
            protocol: "tcp".into(),
            device_names: String::new(),
            threads: 1,
            tenant_id: "default".into(),
            enable_http_server: false,
            http_port: 9300,
            warnings: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/// One `name=value` taken from the command line; booleans are already `true`/`false`
/// for the bare and `no` forms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Assignment {
    name: String,
    value: String,
}

/// What a command line is checked against.
struct Grammar<'a> {
    /// Kind of a (normalized) flag name, `None` when nobody defines it.
    kind_of: &'a dyn Fn(&str) -> Option<FlagKind>,
    /// Node flags treat `-` and `_` in names alike; the master keeps gflags' exact names.
    dashes_are_underscores: bool,
    /// The text returned for `--help`.
    usage: &'a dyn Fn() -> String,
}

/// Nesting bound for `--flagfile`, so a file that includes itself fails instead of looping.
const MAX_FLAGFILE_DEPTH: usize = 8;

fn tokenize(args: &[String], g: &Grammar<'_>, depth: usize) -> Result<Vec<Assignment>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            // gflags stops at `--`; neither process takes positional arguments.
            if let Some(extra) = args.get(i) {
                return Err(format!("unexpected argument '{extra}'"));
            }
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty())
        else {
            return Err(format!("unexpected argument '{arg}'"));
        };
        let (raw_name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let name = if g.dashes_are_underscores {
            raw_name.replace('-', "_")
        } else {
            raw_name.to_string()
        };
        if HELP_FLAGS.contains(&name.as_str()) {
            return Err((g.usage)());
        }
        if name == "flagfile" {
            let path = match inline {
                Some(v) => v,
                None => take_next(args, &mut i, &name)?,
            };
            out.extend(read_flagfile(&path, g, depth)?);
            continue;
        }
        match (g.kind_of)(&name) {
            Some(FlagKind::Bool) => out.push(Assignment {
                name,
                value: inline.unwrap_or_else(|| "true".into()),
            }),
            Some(FlagKind::Value) => {
                let value = match inline {
                    Some(v) => v,
                    // glog's `-v` is often written alone; gflags would then eat the next flag.
                    None if name == "v" && args.get(i).is_none_or(|n| n.starts_with('-')) => {
                        "1".into()
                    }
                    None => take_next(args, &mut i, &name)?,
                };
                out.push(Assignment { name, value });
            }
            None => {
                let negated = name
                    .strip_prefix("no")
                    .filter(|base| (g.kind_of)(base) == Some(FlagKind::Bool));
                match negated {
                    Some(base) if inline.is_none() => out.push(Assignment {
                        name: base.to_string(),
                        value: "false".into(),
                    }),
                    Some(base) => {
                        return Err(format!(
                            "boolean flag '{base}' takes no value in its '--no{base}' form"
                        ));
                    }
                    None => return Err(format!("unknown command line flag '{raw_name}'")),
                }
            }
        }
    }
    Ok(out)
}

fn take_next(args: &[String], i: &mut usize, name: &str) -> Result<String, String> {
    match args.get(*i) {
        Some(v) => {
            *i += 1;
            Ok(v.clone())
        }
        None => Err(format!("flag '{name}' is missing its argument")),
    }
}

/// gflags' `--flagfile`: one flag per line, `#` comments and blank lines skipped.
fn read_flagfile(path: &str, g: &Grammar<'_>, depth: usize) -> Result<Vec<Assignment>, String> {
    if depth >= MAX_FLAGFILE_DEPTH {
        return Err(format!("--flagfile nested too deeply: path={path}"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --flagfile: path={path} error={e}"))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    tokenize(&lines, g, depth + 1)
}

fn table_kind(table: &[(&str, FlagKind)], name: &str) -> Option<FlagKind> {
    table.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

fn main_table_kind(table: &[(&str, FlagKind, &str, &str)], name: &str) -> Option<FlagKind> {
    table.iter().find(|(n, ..)| *n == name).map(|(_, k, ..)| *k)
}

fn usage(command: &str, table: &[(&str, FlagKind, &str, &str)], ignored_note: &str) -> String {
    let mut s = format!("{USAGE_PREFIX}{command} [--flag=value ...]\n\nflags:\n");
    for (name, kind, default, meaning) in table {
        let shown = match kind {
            FlagKind::Bool => format!("--[no]{name}"),
            FlagKind::Value => format!("--{name}=VALUE"),
        };
        s.push_str(&format!("  {shown:<48} {meaning} (default: {default:?})\n"));
    }
    s.push_str(&format!(
        "\nsyntax: --name=value, --name value, -name=value; booleans --name, --noname, \
         --name=true|false; --flagfile=FILE.\n{ignored_note}"
    ));
    s
}

// ---------------------------------------------------------------------------------------------
// Value helpers
// ---------------------------------------------------------------------------------------------

fn bad(name: &str, value: &str, why: impl std::fmt::Display) -> String {
    format!("invalid value for --{name}: value={value:?} ({why})")
}

/// §5.2 booleans plus gflags' `t`/`f`.
fn bool_of(name: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "t" => Ok(true),
        "f" => Ok(false),
        _ => parse_bool(value).map_err(|e| bad(name, value, e.message())),
    }
}

fn port_of(name: &str, value: &str) -> Result<u16, String> {
    value
        .trim()
        .parse::<u16>()
        .map_err(|_| bad(name, value, "expected a port number 0..=65535"))
}

fn usize_of(name: &str, value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| bad(name, value, "expected a non-negative integer"))
}

fn ratio_of(name: &str, value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(bad(name, value, "expected a number")),
    }
}

fn duration_of(name: &str, value: &str) -> Result<u64, String> {
    parse_duration_ms(value).map_err(|e| bad(name, value, e.message()))
}

/// A `*_sec` flag in milliseconds: a bare number is seconds (fractions allowed); a value with
/// a unit (`500ms`, `2m`) is read as a duration, so `10s` works too.
fn seconds_of(name: &str, value: &str) -> Result<u64, String> {
    let t = value.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return match t.parse::<f64>() {
            Ok(s) if s.is_finite() && s * 1000.0 < u64::MAX as f64 => Ok((s * 1000.0) as u64),
            _ => Err(bad(name, value, "expected seconds")),
        };
    }
    duration_of(name, value)
}

fn size_of(name: &str, value: &str) -> Result<u64, String> {
    parse_size(value).map_err(|e| bad(name, value, e.message()))
}

// ---------------------------------------------------------------------------------------------
// Master
// ---------------------------------------------------------------------------------------------

fn master_kind(name: &str) -> Option<FlagKind> {
    main_table_kind(MASTER_FLAGS, name)
        .or_else(|| table_kind(MOONCAKE_MASTER_IGNORED_FLAGS, name))
        .or_else(|| table_kind(GLOG_FLAGS, name))
}

/// Mooncake's config-file spellings that differ from the flag names.
const MASTER_FILE_ALIASES: &[(&str, &str)] = &[
    ("client_live_ttl_sec", "client_ttl"),
    ("client_ttl_sec", "client_ttl"),
    ("rpc_server_port", "rpc_port"),
];

/// Master flags while they are being applied; `rpc_port`/`port` are resolved at the end.
#[derive(Default)]
struct MasterBuilder {
    flags: MasterFlags,
    rpc_port: Option<u16>,
    port_alias: Option<u16>,
    rpc_thread_num: Option<usize>,
    max_threads: Option<usize>,
}

impl MasterBuilder {
    /// Applies one assignment (from the command line or the config file).
    fn apply(&mut self, name: &str, value: &str) -> Result<(), String> {
        let f = &mut self.flags;
        let s = &mut f.settings;
        match name {
            "rpc_port" => self.rpc_port = Some(port_of(name, value)?),
            "port" => self.port_alias = Some(port_of(name, value)?),
            "rpc_address" => f.rpc_address = value.to_string(),
            "rpc_interface" => f.rpc_interface = value.to_string(),
            "rpc_thread_num" => self.rpc_thread_num = Some(usize_of(name, value)?),
            "max_threads" => self.max_threads = Some(usize_of(name, value)?),
            "metrics_port" => f.metrics_port = port_of(name, value)?,
            "metrics_host" => f.metrics_host = value.to_string(),
            "enable_metric_reporting" => f.enable_metric_reporting = bool_of(name, value)?,
            "default_kv_lease_ttl" => s.default_kv_lease_ttl_ms = duration_of(name, value)?,
            "default_kv_soft_pin_ttl" => s.default_kv_soft_pin_ttl_ms = duration_of(name, value)?,
            "max_kv_soft_pin_ttl" => s.max_kv_soft_pin_ttl_ms = duration_of(name, value)?,
            "allow_evict_soft_pinned_objects" => {
                s.allow_evict_soft_pinned_objects = bool_of(name, value)?
            }
            "eviction_high_watermark_ratio" => {
                s.eviction_high_watermark_ratio = ratio_of(name, value)?
            }
            "eviction_ratio" => s.eviction_ratio = ratio_of(name, value)?,
            "client_ttl" => s.client_ttl_ms = seconds_of(name, value)?,
            "put_start_discard_timeout_sec" => {
                s.put_start_discard_timeout_ms = seconds_of(name, value)?
            }
            "put_start_release_timeout_sec" => {
                s.put_start_release_timeout_ms = seconds_of(name, value)?
            }
            "allocation_strategy" => {
                s.allocation_strategy =
                    AllocationStrategy::parse(value.trim()).map_err(|e| bad(name, value, e))?
            }
            "memory_allocator" => match value.trim() {
                "offset" | "cachelib" => f.memory_allocator = value.trim().to_string(),
                _ => return Err(bad(name, value, "expected offset or cachelib")),
            },
            "cluster_id" => s.cluster_id = value.to_string(),
            "enable_http_metadata_server" => f.enable_http_metadata_server = bool_of(name, value)?,
            "http_metadata_server_host" => f.http_metadata_server_host = value.to_string(),
            "http_metadata_server_port" => f.http_metadata_server_port = port_of(name, value)?,
            "enable_metadata_cleanup_on_timeout" => {
                f.enable_metadata_cleanup_on_timeout = bool_of(name, value)?
            }
            "config_path" => f.config_path = value.to_string(),
            _ => {
                if let Some(kind) = table_kind(MOONCAKE_MASTER_IGNORED_FLAGS, name) {
                    // Still check booleans, so `--enable_ha=maybe` is caught as a typo.
                    if kind == FlagKind::Bool {
                        bool_of(name, value)?;
                    }
                    f.warnings.push(format!(
                        "flag --{name}={value} is accepted but ignored: the feature is not \
                         supported by tidepool yet"
                    ));
                } else if table_kind(GLOG_FLAGS, name).is_some() {
                    f.warnings.push(format!(
                        "glog flag --{name}={value} is accepted but ignored: tidepool logs \
                         through RUST_LOG"
                    ));
                } else {
                    return Err(format!("unknown command line flag '{name}'"));
                }
            }
        }
        Ok(())
    }

    /// Resolves aliases and defaults that depend on several flags, then validates.
    fn finish(mut self) -> Result<MasterFlags, String> {
        let f = &mut self.flags;
        // Mooncake: `--rpc_port` wins when positive, else `--port`, else the default.
        f.rpc_port = match (self.rpc_port, self.port_alias) {
            (Some(p), alias) if p > 0 => {
                if alias.is_some() {
                    f.warnings.push(format!(
                        "both --rpc_port and the deprecated --port are set; using rpc_port={p}"
                    ));
                }
                p
            }
            (_, Some(alias)) => {
                f.warnings
                    .push("flag --port is deprecated; use --rpc_port".to_string());
                alias
            }
            // An explicit `--rpc_port=0` with no `--port` binds any free port (tests use it).
            (Some(0), None) => 0,
            (_, None) => 50051,
        };
        f.rpc_thread_num = match (self.rpc_thread_num, self.max_threads) {
            (Some(n), _) if n > 0 => n,
            (_, Some(n)) if n > 0 => {
                f.warnings
                    .push("flag --max_threads is deprecated; use --rpc_thread_num".to_string());
                n.min(default_rpc_threads().max(1))
            }
            _ => default_rpc_threads(),
        };
        f.settings.validate()?;
        Ok(self.flags)
    }
}

/// Parses the arguments of `tidepool master` (program and subcommand names excluded).
///
/// Precedence: built-in defaults < the `--config_path` file < flags given on the command line,
/// whatever their order. `Err` carries a message to print before exiting 1, or the help text
/// (see [`is_help`]).
pub fn parse_master_flags(args: &[String]) -> Result<MasterFlags, String> {
    let usage_text = || {
        usage(
            "tidepool master",
            MASTER_FLAGS,
            "Mooncake's HA, offload, snapshot, CXL, NoF, tenant, KV-event, replication and \
             task flags and glog's flags are accepted and ignored with a warning.\n",
        )
    };
    let grammar = Grammar {
        kind_of: &master_kind,
        dashes_are_underscores: false,
        usage: &usage_text,
    };
    let given = tokenize(args, &grammar, 0)?;
    let mut b = MasterBuilder::default();
    if let Some(path) = given
        .iter()
        .rev()
        .find(|a| a.name == "config_path")
        .filter(|a| !a.value.is_empty())
    {
        for (key, value) in read_master_config(&path.value)? {
            let name = MASTER_FILE_ALIASES
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(key.as_str(), |(_, n)| *n);
            if master_kind(name).is_none() {
                // Unknown file keys are skipped (Mooncake reads only the keys it knows),
                // but said aloud so a typo is visible.
                b.flags.warnings.push(format!(
                    "config file key '{key}' is not a master flag; ignored: path={}",
                    path.value
                ));
                continue;
            }
            b.apply(name, &value)
                .map_err(|e| format!("{e} in config file {}", path.value))?;
        }
    }
    for a in &given {
        b.apply(&a.name, &a.value)?;
    }
    b.finish()
}

/// Reads a master config file into `(key, value)` pairs: a JSON object, or a flat YAML
/// mapping (`key: value` lines) when the text is not JSON.
fn read_master_config(path: &str) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --config_path: path={path} error={e}"))?;
    if text.trim_start().starts_with('{') {
        parse_json_config(&text).map_err(|e| format!("{e}: path={path}"))
    } else {
        parse_flat_yaml(&text).map_err(|e| format!("{e}: path={path}"))
    }
}

fn parse_json_config(text: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("bad JSON config file ({e})"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("config file is not a JSON object".into());
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, v) in map {
        let s = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            // Endpoint lists (e.g. etcd) are written as arrays; gflags joins them with `;`.
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(";"),
            serde_json::Value::Object(_) => {
                return Err(format!("config file key '{key}' has an object value"));
            }
        };
        out.push((key, s));
    }
    Ok(out)
}

/// The YAML subset Mooncake's sample master configs use: one `key: value` per line, `#`
/// comments, optional quotes. Nested mappings and lists are rejected rather than misread.
fn parse_flat_yaml(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = strip_yaml_comment(line);
        if line.trim().is_empty() || line.trim() == "---" {
            continue;
        }
        if line.starts_with([' ', '\t']) || line.trim_start().starts_with('-') {
            return Err(format!(
                "config file line {} is nested YAML, which is not supported",
                n + 1
            ));
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("config file line {} is not 'key: value'", n + 1));
        };
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        if value.is_empty() || value == "~" || value == "null" {
            continue;
        }
        out.push((key.trim().to_string(), value.to_string()));
    }
    Ok(out)
}

/// Drops a `#` comment that is outside quotes.
fn strip_yaml_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            ('#', None) if i == 0 || line[..i].ends_with([' ', '\t']) => return &line[..i],
            _ => {}
        }
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Node
// ---------------------------------------------------------------------------------------------

fn node_kind(name: &str) -> Option<FlagKind> {
    main_table_kind(NODE_FLAGS, name).or_else(|| table_kind(GLOG_FLAGS, name))
}

/// Parses the arguments of `tidepool node` (program and subcommand names excluded).
///
/// Dashes and underscores in names are equivalent (`--segment-size=4GiB`). `--protocol=rdma`
/// is an error unless `MC_FORCE_TCP` is set to a true value, which forces `tcp` with a warning;
/// `--enable_offload=true` is an error until the SSD tier exists. `Err` as for
/// [`parse_master_flags`].
pub fn parse_node_flags(args: &[String]) -> Result<NodeFlags, String> {
    let force_tcp = std::env::var("MC_FORCE_TCP").ok();
    parse_node_flags_with(args, force_tcp.as_deref())
}

/// [`parse_node_flags`] with the `MC_FORCE_TCP` value passed in, so tests need not touch the
/// process environment.
fn parse_node_flags_with(args: &[String], force_tcp: Option<&str>) -> Result<NodeFlags, String> {
    let usage_text = || {
        usage(
            "tidepool node",
            NODE_FLAGS,
            "dashes and underscores in names are equivalent; glog's flags are accepted and \
             ignored with a warning.\n",
        )
    };
    let grammar = Grammar {
        kind_of: &node_kind,
        dashes_are_underscores: true,
        usage: &usage_text,
    };
    let mut f = NodeFlags::default();
    let mut enable_offload = false;
    for Assignment { name, value } in tokenize(args, &grammar, 0)? {
        let (name, value) = (name.as_str(), value.as_str());
        match name {
            "host" => f.host = value.trim().to_string(),
            "port" => f.port = port_of(name, value)?,
            "global_segment_size" | "segment_size" => f.global_segment_size = size_of(name, value)?,
            "local_buffer_size" => f.local_buffer_size = size_of(name, value)?,
            "master_server_address" => f.master_server_address = value.trim().to_string(),
            "metadata_server" => f.metadata_server = value.trim().to_string(),
            "protocol" => f.protocol = value.trim().to_ascii_lowercase(),
            "device_names" | "device_name" => f.device_names = value.to_string(),
            "threads" => match usize_of(name, value)? {
                0 => return Err(bad(name, value, "must be at least 1")),
                n => f.threads = n,
            },
            "tenant_id" => f.tenant_id = value.to_string(),
            "enable_offload" => enable_offload = bool_of(name, value)?,
            // Only meaningful with offload, which is refused below.
            "start_offload_rpc_server" => {
                bool_of(name, value)?;
            }
            "enable_http_server" => f.enable_http_server = bool_of(name, value)?,
            "http_port" => f.http_port = port_of(name, value)?,
            _ if table_kind(GLOG_FLAGS, name).is_some() => f.warnings.push(format!(
                "glog flag --{name}={value} is accepted but ignored: tidepool logs through RUST_LOG"
            )),
            _ => return Err(format!("unknown command line flag '{name}'")),
        }
    }
    if enable_offload {
        return Err("--enable_offload=true is not supported yet: tidepool has no SSD tier".into());
    }
    if f.protocol != "tcp" {
        let forced = force_tcp.is_some_and(|v| parse_bool(v).unwrap_or(false));
        if f.protocol == "rdma" && forced {
            f.warnings
                .push("protocol rdma requested but MC_FORCE_TCP is set; using tcp".to_string());
            f.protocol = "tcp".into();
        } else {
            return Err(format!(
                "invalid value for --protocol: value={:?} (only tcp is supported; \
                 set MC_FORCE_TCP=1 to run rdma deployments over tcp)",
                f.protocol
            ));
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn master(list: &[&str]) -> Result<MasterFlags, String> {
        parse_master_flags(&args(list))
    }

    fn node(list: &[&str]) -> Result<NodeFlags, String> {
        parse_node_flags_with(&args(list), None)
    }

    fn config_file(suffix: &str, text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn master_defaults_match_the_contract() {
        let f = master(&[]).unwrap();
        assert_eq!(f, MasterFlags::default());
        assert_eq!(f.rpc_port, 50051);
        assert_eq!(f.rpc_address, "0.0.0.0");
        assert_eq!(f.rpc_interface, "");
        assert!(f.rpc_thread_num >= 1 && f.rpc_thread_num <= 16);
        assert_eq!((f.metrics_host.as_str(), f.metrics_port), ("0.0.0.0", 9003));
        assert!(f.enable_metric_reporting);
        assert!(!f.enable_http_metadata_server);
        assert_eq!(
            (
                f.http_metadata_server_host.as_str(),
                f.http_metadata_server_port
            ),
            ("0.0.0.0", 8080)
        );
        assert!(!f.enable_metadata_cleanup_on_timeout);
        assert_eq!(f.memory_allocator, "offset");
        assert_eq!(f.config_path, "");
        assert!(f.warnings.is_empty());
        let s = &f.settings;
        assert_eq!(s.default_kv_lease_ttl_ms, 10_000);
        assert_eq!(s.default_kv_soft_pin_ttl_ms, 1_800_000);
        assert_eq!(s.max_kv_soft_pin_ttl_ms, 86_400_000);
        assert!(s.allow_evict_soft_pinned_objects);
        assert_eq!(s.eviction_high_watermark_ratio, 0.90);
        assert_eq!(s.eviction_ratio, 0.05);
        assert_eq!(s.client_ttl_ms, 10_000);
        assert_eq!(s.put_start_discard_timeout_ms, 30_000);
        assert_eq!(s.put_start_release_timeout_ms, 600_000);
        assert_eq!(s.allocation_strategy, AllocationStrategy::Random);
        assert_eq!(s.cluster_id, "mooncake_cluster");
    }

    #[test]
    fn every_syntax_form() {
        let f = master(&[
            "--rpc_port=1000",
            "--metrics_port",
            "2000",
            "-http_metadata_server_port=3000",
            "-rpc_address",
            "10.0.0.1",
            "--cluster_id=c1",
            "--",
        ])
        .unwrap();
        assert_eq!(f.rpc_port, 1000);
        assert_eq!(f.metrics_port, 2000);
        assert_eq!(f.http_metadata_server_port, 3000);
        assert_eq!(f.rpc_address, "10.0.0.1");
        assert_eq!(f.settings.cluster_id, "c1");
        // A value that starts with a dash still belongs to the flag (gflags' rule).
        assert_eq!(
            master(&["--rpc_interface", "-x"]).unwrap().rpc_interface,
            "-x"
        );
        assert!(
            master(&["--metrics_port"])
                .unwrap_err()
                .contains("missing its argument")
        );
        assert!(
            master(&["stray"])
                .unwrap_err()
                .contains("unexpected argument 'stray'")
        );
        assert!(master(&["--", "stray"]).unwrap_err().contains("stray"));
    }

    #[test]
    fn bool_forms() {
        let on = |l: &[&str]| master(l).unwrap().enable_http_metadata_server;
        assert!(on(&["--enable_http_metadata_server"]));
        assert!(on(&["-enable_http_metadata_server"]));
        assert!(on(&["--enable_http_metadata_server=true"]));
        assert!(on(&["--enable_http_metadata_server=True"]));
        assert!(on(&["--enable_http_metadata_server=1"]));
        assert!(on(&["--enable_http_metadata_server=yes"]));
        assert!(on(&["--enable_http_metadata_server=t"]));
        assert!(!on(&["--enable_http_metadata_server=false"]));
        assert!(!on(&["--enable_http_metadata_server=off"]));
        assert!(!on(&[
            "--enable_http_metadata_server",
            "--noenable_http_metadata_server"
        ]));
        assert!(
            !master(&["--noenable_metric_reporting"])
                .unwrap()
                .enable_metric_reporting
        );
        // A bare boolean never swallows the next argument.
        let f = master(&["--enable_http_metadata_server", "--rpc_port=7"]).unwrap();
        assert!(f.enable_http_metadata_server);
        assert_eq!(f.rpc_port, 7);
        let e = master(&["--enable_http_metadata_server=maybe"]).unwrap_err();
        assert!(
            e.contains("enable_http_metadata_server") && e.contains("maybe"),
            "{e}"
        );
        assert!(master(&["--noenable_ha=true"]).is_err());
        // `no` + a value flag is not a negation.
        let e = master(&["--norpc_port"]).unwrap_err();
        assert_eq!(e, "unknown command line flag 'norpc_port'");
    }

    #[test]
    fn durations_and_seconds() {
        let f = master(&[
            "--default_kv_lease_ttl=500",
            "--default_kv_soft_pin_ttl=10s",
            "--max_kv_soft_pin_ttl=2h",
            "--client_ttl=60",
            "--put_start_discard_timeout_sec=5",
            "--put_start_release_timeout_sec=1.5",
        ])
        .unwrap();
        let s = &f.settings;
        assert_eq!(s.default_kv_lease_ttl_ms, 500);
        assert_eq!(s.default_kv_soft_pin_ttl_ms, 10_000);
        assert_eq!(s.max_kv_soft_pin_ttl_ms, 7_200_000);
        assert_eq!(s.client_ttl_ms, 60_000);
        assert_eq!(s.put_start_discard_timeout_ms, 5_000);
        assert_eq!(s.put_start_release_timeout_ms, 1_500);
        assert_eq!(
            master(&["--default_kv_lease_ttl=10s"])
                .unwrap()
                .settings
                .default_kv_lease_ttl_ms,
            10_000
        );
        assert_eq!(
            master(&["--client_ttl=500ms"])
                .unwrap()
                .settings
                .client_ttl_ms,
            500
        );
        let e = master(&["--default_kv_lease_ttl=10d"]).unwrap_err();
        assert!(
            e.contains("default_kv_lease_ttl") && e.contains("10d"),
            "{e}"
        );
        assert!(
            master(&["--client_ttl=0"])
                .unwrap_err()
                .contains("client_ttl")
        );
    }

    #[test]
    fn ratios_strategy_and_allocator() {
        let f = master(&[
            "--eviction_high_watermark_ratio=0.8",
            "--eviction_ratio=0.1",
            "--allocation_strategy=free_ratio_first",
            "--memory_allocator=cachelib",
        ])
        .unwrap();
        assert_eq!(f.settings.eviction_high_watermark_ratio, 0.8);
        assert_eq!(f.settings.eviction_ratio, 0.1);
        assert_eq!(
            f.settings.allocation_strategy,
            AllocationStrategy::FreeRatioFirst
        );
        assert_eq!(f.memory_allocator, "cachelib");
        let e = master(&["--eviction_ratio=1.5"]).unwrap_err();
        assert!(e.contains("eviction_ratio") && e.contains("1.5"), "{e}");
        let e = master(&["--eviction_high_watermark_ratio=abc"]).unwrap_err();
        assert!(
            e.contains("eviction_high_watermark_ratio") && e.contains("abc"),
            "{e}"
        );
        assert!(
            master(&["--allocation_strategy=Random"])
                .unwrap_err()
                .contains("allocation_strategy")
        );
        assert!(master(&["--memory_allocator=jemalloc"]).is_err());
        assert!(
            master(&["--cluster_id=bad/id"])
                .unwrap_err()
                .contains("cluster_id")
        );
        assert!(
            master(&["--rpc_port=70000"])
                .unwrap_err()
                .contains("rpc_port")
        );
    }

    #[test]
    fn unknown_flag_is_an_error() {
        assert_eq!(
            master(&["--xyz=1"]).unwrap_err(),
            "unknown command line flag 'xyz'"
        );
        assert_eq!(
            master(&["--xyz"]).unwrap_err(),
            "unknown command line flag 'xyz'"
        );
        // The master keeps gflags' exact names: dashes are not underscores there.
        assert!(master(&["--rpc-port=1"]).is_err());
    }

    #[test]
    fn ignored_and_glog_flags_warn() {
        let f = master(&[
            "--enable_ha",
            "--etcd_endpoints",
            "127.0.0.1:2379",
            "--enable_snapshot=false",
            "--snapshot_interval_seconds=30",
            "--v=1",
            "--logtostderr",
            "--log_dir=/tmp",
            "-v",
        ])
        .unwrap();
        assert_eq!(f.warnings.len(), 8, "{:#?}", f.warnings);
        assert!(f.warnings[0].contains("--enable_ha=true"));
        assert!(f.warnings[1].contains("127.0.0.1:2379"));
        assert!(
            f.warnings
                .iter()
                .any(|w| w.contains("glog flag --logtostderr"))
        );
        // `-v 2`: the value is taken from the next argument.
        let f = master(&["-v", "2", "--rpc_port=9"]).unwrap();
        assert_eq!(f.rpc_port, 9);
        assert!(f.warnings[0].contains("--v=2"));
        assert!(master(&["--enable_ha=perhaps"]).is_err());
    }

    #[test]
    fn port_alias() {
        assert_eq!(master(&["--port=6000"]).unwrap().rpc_port, 6000);
        assert!(master(&["--port=6000"]).unwrap().warnings[0].contains("deprecated"));
        assert_eq!(
            master(&["--rpc_port=0", "--port=6000"]).unwrap().rpc_port,
            6000
        );
        assert_eq!(
            master(&["--rpc_port=7000", "--port=6000"])
                .unwrap()
                .rpc_port,
            7000
        );
        assert_eq!(master(&["--rpc_port=0"]).unwrap().rpc_port, 0);
        assert_eq!(master(&["--rpc_thread_num=3"]).unwrap().rpc_thread_num, 3);
    }

    #[test]
    fn help_is_a_distinct_err() {
        for h in ["--help", "-help", "--helpfull", "-h"] {
            let e = master(&["--rpc_port=1", h]).unwrap_err();
            assert!(is_help(&e), "{h}: {e}");
            assert!(e.contains("--default_kv_lease_ttl"));
        }
        assert!(!is_help(&master(&["--xyz"]).unwrap_err()));
        let e = node(&["--help"]).unwrap_err();
        assert!(is_help(&e) && e.contains("--global_segment_size"));
    }

    #[test]
    fn json_config_file_and_precedence() {
        let file = config_file(
            ".json",
            r#"{
                "rpc_port": 51000,
                "eviction_high_watermark_ratio": 1.0,
                "eviction_ratio": 0.1,
                "client_live_ttl_sec": 60,
                "default_kv_lease_ttl": "5s",
                "enable_http_metadata_server": true,
                "enable_ha": false,
                "etcd_endpoints": ["a:2379", "b:2379"],
                "root_fs_dir": null,
                "mystery_key": 1
            }"#,
        );
        let path = file.path().to_str().unwrap().to_string();
        let f = master(&[&format!("--config_path={path}")]).unwrap();
        assert_eq!(f.config_path, path);
        assert_eq!(f.rpc_port, 51000);
        assert_eq!(f.settings.eviction_high_watermark_ratio, 1.0);
        assert_eq!(f.settings.eviction_ratio, 0.1);
        assert_eq!(f.settings.client_ttl_ms, 60_000);
        assert_eq!(f.settings.default_kv_lease_ttl_ms, 5_000);
        assert!(f.enable_http_metadata_server);
        assert!(f.warnings.iter().any(|w| w.contains("mystery_key")));
        assert!(f.warnings.iter().any(|w| w.contains("a:2379;b:2379")));
        // Explicit flags win, even when written before --config_path.
        let f = master(&[
            "--eviction_ratio=0.2",
            "--config_path",
            &path,
            "--client_ttl=5",
        ])
        .unwrap();
        assert_eq!(f.settings.eviction_ratio, 0.2);
        assert_eq!(f.settings.client_ttl_ms, 5_000);
        assert_eq!(f.settings.eviction_high_watermark_ratio, 1.0);
        // A bad value in the file names the flag, the value and the file.
        let bad_file = config_file(".json", r#"{"eviction_ratio": "lots"}"#);
        let bad_path = bad_file.path().to_str().unwrap();
        let e = master(&[&format!("--config_path={bad_path}")]).unwrap_err();
        assert!(
            e.contains("eviction_ratio") && e.contains("lots") && e.contains(bad_path),
            "{e}"
        );
        assert!(master(&["--config_path=/nonexistent/tidepool.json"]).is_err());
        let not_json = config_file(".json", "{ nope");
        assert!(master(&[&format!("--config_path={}", not_json.path().display())]).is_err());
    }

    #[test]
    fn yaml_config_file() {
        let file = config_file(
            ".yaml",
            "# master config\nrpc_port: 52000\ncluster_id: \"prod#1\"  # quoted hash kept\n\
             enable_metric_reporting: false\nallocation_strategy: 'local_first'\nroot_fs_dir:\n",
        );
        let f = master(&[&format!("--config_path={}", file.path().display())]);
        // `prod#1` is not a valid cluster id, which proves the quoted `#` was kept.
        assert!(f.unwrap_err().contains("prod#1"));
        let file = config_file(
            ".yaml",
            "rpc_port: 52000\nenable_metric_reporting: false\nallocation_strategy: 'local_first'\n",
        );
        let f = master(&[&format!("--config_path={}", file.path().display())]).unwrap();
        assert_eq!(f.rpc_port, 52000);
        assert!(!f.enable_metric_reporting);
        assert_eq!(
            f.settings.allocation_strategy,
            AllocationStrategy::LocalFirst
        );
        let nested = config_file(".yaml", "ha:\n  enable: true\n");
        assert!(
            master(&[&format!("--config_path={}", nested.path().display())])
                .unwrap_err()
                .contains("nested")
        );
    }

    #[test]
    fn flagfile() {
        let file = config_file(
            ".flags",
            "# comment\n--rpc_port=4000\n\n--enable_http_metadata_server\n",
        );
        let f = master(&[
            &format!("--flagfile={}", file.path().display()),
            "--metrics_port=1",
        ])
        .unwrap();
        assert_eq!(f.rpc_port, 4000);
        assert!(f.enable_http_metadata_server);
        assert_eq!(f.metrics_port, 1);
    }

    #[test]
    fn node_defaults() {
        let f = node(&[]).unwrap();
        assert_eq!(f, NodeFlags::default());
        assert_eq!(f.host, "0.0.0.0");
        assert_eq!(f.port, 50052);
        assert_eq!(f.global_segment_size, 4 << 30);
        assert_eq!(f.local_buffer_size, 0);
        assert_eq!(f.master_server_address, "127.0.0.1:50051");
        assert_eq!(f.metadata_server, "http://127.0.0.1:8080/metadata");
        assert_eq!(f.protocol, "tcp");
        assert_eq!(f.device_names, "");
        assert_eq!(f.threads, 1);
        assert_eq!(f.tenant_id, "default");
        assert!(!f.enable_http_server);
        assert_eq!(f.http_port, 9300);
    }

    #[test]
    fn node_flags_and_aliases() {
        let f = node(&[
            "--host=10.0.0.2:17000",
            "--port",
            "50100",
            "--segment-size=4GiB",
            "--local-buffer-size",
            "16 MB",
            "--master_server_address=m:50051",
            "--metadata-server=P2PHANDSHAKE",
            "--threads=4",
            "--tenant-id=t1",
            "--enable-http-server",
            "--http_port=9400",
            "--start_offload_rpc_server=false",
            "--noenable-offload",
        ])
        .unwrap();
        assert_eq!(f.host, "10.0.0.2:17000");
        assert_eq!(f.port, 50100);
        assert_eq!(f.global_segment_size, 4 << 30);
        assert_eq!(f.local_buffer_size, 16 << 20);
        assert_eq!(f.master_server_address, "m:50051");
        assert_eq!(f.metadata_server, "P2PHANDSHAKE");
        assert_eq!(f.threads, 4);
        assert_eq!(f.tenant_id, "t1");
        assert!(f.enable_http_server);
        assert_eq!(f.http_port, 9400);
        assert_eq!(
            node(&["--segment_size=1.5 GB"])
                .unwrap()
                .global_segment_size,
            1_610_612_736
        );
        assert_eq!(
            node(&["--global_segment_size=512MB"])
                .unwrap()
                .global_segment_size,
            512 << 20
        );
        let e = node(&["--global_segment_size=10%"]).unwrap_err();
        assert!(
            e.contains("global_segment_size") && e.contains("10%"),
            "{e}"
        );
        assert_eq!(
            node(&["--bogus"]).unwrap_err(),
            "unknown command line flag 'bogus'"
        );
        assert!(node(&["--threads=0"]).is_err());
        assert_eq!(node(&["--v=2"]).unwrap().warnings.len(), 1);
    }

    #[test]
    fn node_refuses_offload_and_rdma() {
        assert!(
            node(&["--enable_offload=true"])
                .unwrap_err()
                .contains("enable_offload")
        );
        assert!(node(&["--enable_offload"]).is_err());
        assert!(node(&["--enable_offload=false"]).is_ok());
        let e = node(&["--protocol=rdma"]).unwrap_err();
        assert!(e.contains("protocol") && e.contains("rdma"), "{e}");
        let f = parse_node_flags_with(
            &args(&["--protocol=RDMA", "--device_names=mlx5_0"]),
            Some("1"),
        )
        .unwrap();
        assert_eq!(f.protocol, "tcp");
        assert_eq!(f.device_names, "mlx5_0");
        assert_eq!(f.warnings.len(), 1);
        assert!(parse_node_flags_with(&args(&["--protocol=rdma"]), Some("0")).is_err());
        assert!(parse_node_flags_with(&args(&["--protocol=nvlink"]), Some("1")).is_err());
        assert_eq!(node(&["--protocol=TCP"]).unwrap().protocol, "tcp");
    }
}
