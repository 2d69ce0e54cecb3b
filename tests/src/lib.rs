//! Helpers for segkv's end-to-end tests: build and locate the real `segkv-server` binary, start
//! it on a free port with a temporary data directory, wait until it answers PING (once it has
//! loaded its data; [`Server::start_loading_in`] returns as soon as it answers at all), and kill
//! it when the handle is dropped. Also a raw RESP client for byte-exact comparisons, a handle
//! on a real `redis-server` when one is installed, to diff replies against, and a TCP proxy
//! that cuts and throttles connections ([`Proxy`]) for replication's fault tests. Set
//! `SEGKV_E2E_STDERR=1` to see the servers' logs.
//!
//! ```no_run
//! let srv = segkv_e2e::Server::start(&[]);
//! let mut con = srv.client();
//! let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
//! ```

pub mod proxy;

pub use proxy::Proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The target profile directory this test binary was built in (target/debug or target/release).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of the `segkv-server` binary, built (once per test process) with the same profile as
/// the tests, so `cargo test` and `cargo test --release` each test their own build.
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "segkv-server",
            "--bin",
            "segkv-server",
        ]);
        if release {
            cmd.arg("--release");
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd.status().expect("run cargo build for segkv-server");
        assert!(status.success(), "cargo build -p segkv-server failed");
        let bin = dir.join("segkv-server");
        assert!(bin.exists(), "segkv-server not found at {}", bin.display());
        bin
    })
    .clone()
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running segkv-server, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// The data directory (kept across restarts of the same `Server`).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    args: Vec<String>,
}

impl Server {
    /// Starts a server on a free port with a fresh temporary data directory and `extra` options.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut s = Server::start_in(&dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server with its data in `dir`.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        Server::start_with(dir, extra, true)
    }

    /// Starts a server with its data in `dir` and returns once it answers, possibly still
    /// loading (PING gets `-LOADING`).
    pub fn start_loading_in(dir: &Path, extra: &[&str]) -> Server {
        Server::start_with(dir, extra, false)
    }

    fn start_with(dir: &Path, extra: &[&str], loaded: bool) -> Server {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, port) = launch(dir, &args, loaded);
        Server {
            child,
            port,
            dir: dir.to_path_buf(),
            _tmp: None,
            args,
        }
    }

    /// Restarts the server on the same data directory (after `stop` or `kill9`).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, port) = launch(&self.dir, &self.args, true);
        self.child = child;
        self.port = port;
    }

    /// SIGKILL, no chance to flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A `redis` crate connection (RESP2).
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// A raw connection for byte-exact checks.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }
}

/// Starts the server on a free port and waits until *this* process answers, and with `loaded`
/// until it has loaded its data (a port picked as free can be taken by a parallel test before
/// the server binds it: then try another).
fn launch(dir: &Path, args: &[String], loaded: bool) -> (Child, u16) {
    for _ in 0..10 {
        let port = free_port();
        let mut child = spawn(port, dir, args);
        if answers(&mut child, port, loaded) {
            return (child, port);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "segkv-server did not start (see its stderr by running it by hand with the same options)"
    );
}

/// Whether `child` is up on `port`: it answers PING (`-LOADING` counts unless `loaded`) and
/// INFO names its pid.
fn answers(child: &mut Child, port: u16, loaded: bool) -> bool {
    for _ in 0..500 {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut raw = Raw {
                sock: c,
                buf: Vec::new(),
            };
            let mut probe = || -> Option<bool> {
                raw.sock.write_all(b"PING\r\n").ok()?;
                let pong = reply_bytes(&mut raw)?;
                if pong.starts_with(b"-LOADING") {
                    if loaded {
                        return None;
                    }
                } else if pong != b"+PONG\r\n" {
                    return Some(false);
                }
                raw.sock.write_all(b"INFO server\r\n").ok()?;
                let info = reply_bytes(&mut raw)?;
                Some(
                    String::from_utf8_lossy(&info)
                        .contains(&format!("process_id:{}\r\n", child.id())),
                )
            };
            match probe() {
                Some(true) => return true,
                Some(false) => return false,
                None => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn reply_bytes(raw: &mut Raw) -> Option<Vec<u8>> {
    loop {
        if let Some(n) = reply_len(&raw.buf) {
            return Some(raw.buf.drain(..n).collect());
        }
        let mut chunk = [0u8; 65536];
        let n = raw.sock.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        raw.buf.extend_from_slice(&chunk[..n]);
    }
}

fn spawn(port: u16, dir: &Path, args: &[String]) -> Child {
    // A config file, if any, must come first (as for redis-server).
    let (file, opts) = match args.first() {
        Some(f) if !f.starts_with("--") => (Some(f), &args[1..]),
        _ => (None, args),
    };
    Command::new(server_binary())
        .args(file)
        .args([
            "--port",
            &port.to_string(),
            "--dir",
            dir.to_str().unwrap(),
            "--threads",
            "2",
        ])
        .args(opts)
        .stdout(Stdio::null())
        .stderr(server_stderr())
        .spawn()
        .expect("spawn segkv-server")
}

/// Where a server's log goes: nowhere, or this process's stderr when `SEGKV_E2E_STDERR` is set
/// (to see what the servers of a failing test said).
fn server_stderr() -> Stdio {
    if std::env::var_os("SEGKV_E2E_STDERR").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw TCP connection speaking bytes, with a reader that knows where a RESP reply ends.
pub struct Raw {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Raw {
            sock,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    /// Sends one command as a RESP multibulk request.
    pub fn send_cmd(&mut self, args: &[&[u8]]) {
        self.send(&encode(args));
    }

    /// Reads one whole reply and returns its exact bytes.
    pub fn reply(&mut self) -> Vec<u8> {
        match self.try_reply() {
            Some(r) => r,
            None => panic!(
                "connection closed while waiting for a reply; got so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads one whole reply, or `None` if the server closes the connection first.
    pub fn try_reply(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return Some(self.buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read reply: {e}"),
            }
        }
    }

    /// Sends a command and returns the reply bytes.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send_cmd(args);
        self.reply()
    }

    /// Whether the server closed the connection (reads EOF), after any buffered replies.
    pub fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                // A reset: the server closed with our bytes unread.
                Err(_) => return true,
            }
        }
    }
}

/// Encodes a command as a RESP multibulk request.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Length of the first complete RESP2/RESP3 reply in `b`, if complete.
pub fn reply_len(b: &[u8]) -> Option<usize> {
    let line_end = b.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&b[1..line_end]).ok()?;
    let after = line_end + 2;
    match b[0] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(after),
        b'$' | b'=' | b'!' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (b.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'%' | b'>' | b'|' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let items = if matches!(b[0], b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut pos = after;
            for _ in 0..items {
                pos += reply_len(&b[pos..])?;
            }
            Some(pos)
        }
        _ => None,
    }
}

/// A real redis-server started for comparison, if `redis-server` is installed.
pub struct Redis {
    child: Child,
    pub port: u16,
    _tmp: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` with persistence off; `None` when it is not installed.
    pub fn start() -> Option<Redis> {
        let tmp = tempfile::tempdir().ok()?;
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = Redis {
            child,
            port,
            _tmp: tmp,
        };
        for _ in 0..250 {
            if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                let mut buf = [0u8; 7];
                if c.write_all(b"PING\r\n").is_ok() && c.read_exact(&mut buf).is_ok() {
                    return Some(r);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an executable is on PATH.
pub fn installed(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
