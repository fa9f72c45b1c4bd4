//! Admin subcommands against a running master's admin HTTP service (contract §4.4):
//! `tidepool status`, `tidepool segments`, `tidepool key <KEY>`. They read the same JSON the
//! dashboard reads (`/api/v1/dashboard`, `/get_segments_detail`, `/query_key`) and print
//! readable tables; `--json` prints the raw document instead, for scripts.
//!
//! Blocking HTTP (`ureq`) is enough here: one request per command, no runtime needed.

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::time::Duration;

/// How long a command waits for the master before giving up.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(name = "tidepool", about = "Tidepool admin commands")]
struct Cli {
    /// Admin HTTP address of the master (`host:port`, as its `--metrics_port`).
    #[arg(long, global = true, default_value = "127.0.0.1:9003")]
    admin: String,
    /// Print the master's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Cluster overview: role, objects, capacity, hit ratio, clients, evictions.
    Status,
    /// Every mounted segment with its use.
    Segments,
    /// Where the replicas of one key live (no lease is taken).
    Key {
        /// The key.
        key: String,
    },
}

/// Entry point: `args` starts with the subcommand name. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let cli = match Cli::try_parse_from(
        std::iter::once("tidepool".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(c) => c,
        Err(e) => {
            // Help and version are successes; real parse errors exit 1 (clap's own 2 would
            // differ from every other tidepool subcommand).
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<i32> {
    let base = base_url(&cli.admin);
    match &cli.cmd {
        Cmd::Status => {
            let (_, d) = get_json(&base, "/api/v1/dashboard")?;
            if cli.json {
                println!("{d:#}");
            } else {
                print!("{}", status_text(&cli.admin, &d));
            }
            Ok(0)
        }
        Cmd::Segments => {
            let (_, d) = get_json(&base, "/get_segments_detail")?;
            if cli.json {
                println!("{d:#}");
            } else {
                print!("{}", segments_text(&d));
            }
            Ok(0)
        }
        Cmd::Key { key } => {
            let path = format!("/query_key?key={}", url_encode(key));
            let (code, d) = get_json(&base, &path)?;
            if cli.json {
                println!("{d:#}");
            } else {
                print!("{}", key_text(key, &d));
            }
            Ok(if code == 200 { 0 } else { 1 })
        }
    }
}

/// `http://host:port` from `host:port` or a full URL.
fn base_url(admin: &str) -> String {
    let a = admin.trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// GETs `path` and parses the JSON body; 4xx answers with a JSON body are returned too (the
/// master reports "not found" that way).
fn get_json(base: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let url = format!("{base}{path}");
    let resp = match ureq::get(&url).timeout(TIMEOUT).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => {
            return Err(anyhow!(
                "cannot reach the master's admin service at {base}: {e}"
            ));
        }
    };
    let code = resp.status();
    let body = resp
        .into_string()
        .with_context(|| format!("read answer of {url}"))?;
    let v: Value = serde_json::from_str(&body)
        .with_context(|| format!("answer of {url} (HTTP {code}) is not JSON: {}", body.trim()))?;
    Ok((code, v))
}

/// Percent-encodes a query value.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

/// Human bytes in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1} %", 100.0 * a as f64 / b as f64)
    }
}

/// Renders rows as an aligned table; columns listed in `right` are right-aligned.
fn table(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = w[i].saturating_sub(c.chars().count());
            if right.contains(&i) {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    let total: usize = w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn status_text(admin: &str, d: &Value) -> String {
    let (alloc, cap) = (u(d, "allocated_bytes"), u(d, "capacity_bytes"));
    let (hits, gets) = (u(d, "get_hits"), u(d, "get_total"));
    let rows = vec![
        vec![
            "Role".into(),
            format!("{} ({})", s(d, "role"), s(d, "ha_state")),
        ],
        vec!["Version".into(), s(d, "version").to_string()],
        vec!["Uptime".into(), format!("{} s", u(d, "uptime_s"))],
        vec![
            "Objects".into(),
            format!(
                "{} ({} soft-pinned)",
                u(d, "key_count"),
                u(d, "soft_pin_key_count")
            ),
        ],
        vec![
            "Capacity used".into(),
            format!("{} of {} ({})", bytes(alloc), bytes(cap), pct(alloc, cap)),
        ],
        vec![
            "Exist hit ratio".into(),
            format!(
                "{} ({} found / {} checked)",
                pct(u(d, "exist_hits"), u(d, "exist_keys")),
                u(d, "exist_hits"),
                u(d, "exist_keys")
            ),
        ],
        vec![
            "Hit ratio".into(),
            format!("{} ({hits} hits / {gets} lookups)", pct(hits, gets)),
        ],
        vec!["Clients".into(), u(d, "active_clients").to_string()],
        vec!["Segments".into(), u(d, "segment_count").to_string()],
        vec![
            "Evictions".into(),
            format!(
                "{} objects, {}",
                u(d, "evicted_keys"),
                bytes(u(d, "evicted_bytes"))
            ),
        ],
        vec!["Dead clients".into(), u(d, "dead_clients").to_string()],
        vec!["Revoked puts".into(), u(d, "revoked_puts").to_string()],
    ];
    let mut out = format!("Tidepool master at {admin}\n\n");
    out.push_str(&table(&["FIELD", "VALUE"], &rows, &[]));
    out
}

fn segments_text(d: &Value) -> String {
    let empty = Vec::new();
    let segs = d
        .get("segments")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if segs.is_empty() {
        return "no segments mounted\n".into();
    }
    let rows: Vec<Vec<String>> = segs
        .iter()
        .map(|g| {
            let (used, cap) = (
                u(g, "allocator_used_bytes"),
                u(g, "allocator_capacity_bytes"),
            );
            vec![
                s(g, "segment_name").to_string(),
                s(g, "te_endpoint").to_string(),
                s(g, "client_id").to_string(),
                s(g, "status").to_string(),
                bytes(used),
                bytes(cap),
                pct(used, cap),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SEGMENT", "ENDPOINT", "CLIENT", "STATUS", "USED", "CAPACITY", "USE",
        ],
        &rows,
        &[4, 5, 6],
    );
    let used: u64 = segs.iter().map(|g| u(g, "allocator_used_bytes")).sum();
    let cap: u64 = segs.iter().map(|g| u(g, "allocator_capacity_bytes")).sum();
    out.push_str(&format!(
        "{} segments, {} of {} used ({})\n",
        segs.len(),
        bytes(used),
        bytes(cap),
        pct(used, cap)
    ));
    out
}

fn key_text(key: &str, d: &Value) -> String {
    if d.get("success").and_then(Value::as_bool) != Some(true) {
        return format!(
            "key {key:?}: {} ({})\n",
            s(d, "error_message"),
            d.get("error_code").and_then(Value::as_i64).unwrap_or(0)
        );
    }
    let empty = Vec::new();
    let reps = d.get("data").and_then(Value::as_array).unwrap_or(&empty);
    let rows: Vec<Vec<String>> = reps
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                i.to_string(),
                s(r, "transport_endpoint_").to_string(),
                s(r, "protocol_").to_string(),
                format!("{:#x}", u(r, "buffer_address_")),
                bytes(u(r, "size_")),
            ]
        })
        .collect();
    let mut out = format!("key {key:?}: {} replica(s)\n", reps.len());
    out.push_str(&table(
        &["#", "ENDPOINT", "PROTOCOL", "ADDRESS", "SIZE"],
        &rows,
        &[0, 4],
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subcommands_and_global_admin_flag() {
        let cli = Cli::try_parse_from(["tidepool", "key", "a b", "--admin", "10.0.0.1:1"]).unwrap();
        assert_eq!(cli.admin, "10.0.0.1:1");
        assert!(matches!(cli.cmd, Cmd::Key { ref key } if key == "a b"));
        let cli = Cli::try_parse_from(["tidepool", "status"]).unwrap();
        assert_eq!(cli.admin, "127.0.0.1:9003");
        assert!(
            Cli::try_parse_from(["tidepool", "key"]).is_err(),
            "key needs a KEY"
        );
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(url_encode("a b/c&d=é"), "a%20b%2Fc%26d%3D%C3%A9");
        assert_eq!(base_url("http://h:1/"), "http://h:1");
        assert_eq!(base_url("h:1"), "http://h:1");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "NUM"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "100".into()],
            ],
            &[1],
        );
        assert_eq!(t, "A    NUM\n--------\nxyz    1\nq    100\n");
    }

    #[test]
    fn segment_table_sums_use() {
        let d = serde_json::json!({"segments": [
            {"segment_name": "n1", "te_endpoint": "127.0.0.1:1", "client_id": "07", "status": "OK",
             "allocator_used_bytes": 1024, "allocator_capacity_bytes": 4096},
            {"segment_name": "n2", "te_endpoint": "127.0.0.1:2", "client_id": "08", "status": "OK",
             "allocator_used_bytes": 0, "allocator_capacity_bytes": 4096}]});
        let t = segments_text(&d);
        assert!(t.contains("n1"), "{t}");
        assert!(t.contains("25.0 %"), "{t}");
        assert!(
            t.ends_with("2 segments, 1.0 KiB of 8.0 KiB used (12.5 %)\n"),
            "{t}"
        );
    }
}
