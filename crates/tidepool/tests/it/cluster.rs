//! Test harness: spawn `tidepool master` / `tidepool node`, wait for their READY lines.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Makes the child receive SIGKILL when the test process dies, so a test that aborts (panic
/// in a non-unwinding path, stack overflow, timeout kill) leaves no servers behind.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub ready: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `tidepool <args>` and waits (≤ 20 s) for the line starting with READY.
    pub fn spawn(args: &[String]) -> Proc {
        Self::spawn_env(args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env(args: &[String], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidepool"));
        die_with_parent(&mut cmd);
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .env("TIDEPOOL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tidepool");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY") {
                    let _ = tx.send(line);
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("tidepool {args:?} did not become ready")
            });
        Proc { child, ready }
    }

    /// Value of `key=` on the READY line.
    pub fn field(&self, key: &str) -> String {
        self.ready
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_string()
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a master with the given extra flags on free loopback ports.
pub fn master(extra: &[&str]) -> Proc {
    master_env(extra, &[])
}

/// [`master`] with extra environment variables.
pub fn master_env(extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut args: Vec<String> = [
        "master",
        "--rpc_address=127.0.0.1",
        "--rpc_port=0",
        "--metrics_host=127.0.0.1",
        "--metrics_port=0",
        "--enable_metric_reporting=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn_env(&args, env)
}

/// Starts a storage node contributing `size` to the master at `rpc`.
pub fn node(rpc: &str, size: &str) -> Proc {
    node_with(
        rpc,
        size,
        &["--host=127.0.0.1", "--metadata_server=P2PHANDSHAKE"],
    )
}

/// Starts a storage node with explicit `--host` / `--metadata_server` (and other) flags.
pub fn node_with(rpc: &str, size: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "node".to_string(),
        format!("--master_server_address={rpc}"),
        format!("--global_segment_size={size}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(&args)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET url` -> (status, body); any HTTP status is an answer.
pub fn http_get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// A metric's value from the master's `/metrics` (unlabelled series).
pub fn metric(metrics_addr: &str, name: &str) -> u64 {
    let (_, body) = http_get(&format!("http://{metrics_addr}/metrics"));
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// Polls `cond` every 20 ms until it holds or `within` passes; false on timeout.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = std::time::Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
